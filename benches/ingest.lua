-- wrk script: POST one realistic proposal per request as the demo RevOps agent.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer cs_demo_revops_crm_d3m0t0k3n"
wrk.body = [[{"action":"crm.opportunity.update","summary":"Apply 15% discount to Acme renewal","rationale":"Customer asked on the renewal call; within the Q4 playbook.","target":{"system":"salesforce","type":"Opportunity","id":"006Acme0001","url":"https://acme.my.salesforce.com/006Acme0001"},"changes":[{"path":"discount_percent","before":5,"after":15},{"path":"amount","before":45000,"after":40500}],"params":{"discount_percent":15,"amount":40500,"currency":"USD"},"evidence":[{"label":"Call transcript","url":"https://gong.example/call/42","excerpt":"If you can do 15% we sign today."}],"data_classes":["financial"],"requested_by":"jane@acme-sales.example","expires_in":"8h","metadata":{"trace_id":"abc123"}}]]

local non_201 = 0
response = function(status, headers, body)
  if status ~= 201 then non_201 = non_201 + 1 end
end

done = function(summary, latency, requests)
  -- One machine-readable line for scripts/bench-ingest.
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
