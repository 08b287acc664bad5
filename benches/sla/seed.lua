-- wrk script for scripts/bench-sla: each thread POSTs exactly QUOTA proposals (the ingest
-- benchmark's discount example, as the demo RevOps agent), then only a slow trickle of GET
-- /healthz. A thread is done when every POST is answered, or when each of its connections has had
-- two GETs answered (so it has nothing in flight: a POST lost to a socket error is not waited
-- for); it says so in DONE_FILE, since wrk itself sleeps out its whole -d and the script
-- interrupts it once every thread is done. The database says how many proposals were stored.
local quota = tonumber(os.getenv("QUOTA"))
local connections = tonumber(os.getenv("THREAD_CONNECTIONS"))
local done_file = os.getenv("DONE_FILE")
local body = [[{"action":"crm.opportunity.update","summary":"Apply 15% discount to Acme renewal","rationale":"Customer asked on the renewal call; within the Q4 playbook.","target":{"system":"salesforce","type":"Opportunity","id":"006Acme0001","url":"https://acme.my.salesforce.com/006Acme0001"},"changes":[{"path":"discount_percent","before":5,"after":15},{"path":"amount","before":45000,"after":40500}],"params":{"discount_percent":15,"amount":40500,"currency":"USD"},"evidence":[{"label":"Call transcript","url":"https://gong.example/call/42","excerpt":"If you can do 15% we sign today."}],"data_classes":["financial"],"requested_by":"jane@acme-sales.example","expires_in":"8h","metadata":{"trace_id":"abc123"}}]]
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer cs_demo_revops_crm_d3m0t0k3n"}
local sent, created, failed, checks, stopped = 0, 0, 0, 0, false

request = function()
  if sent < quota then
    sent = sent + 1
    return wrk.format("POST", "/v1/proposals", headers, body)
  end
  return wrk.format("GET", "/healthz")
end

delay = function()
  if sent < quota then return 0 end
  return 50
end

response = function(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 200 then checks = checks + 1
  else failed = failed + 1 end
  if not stopped and (created + failed >= quota or checks >= 2 * connections) then
    stopped = true
    local f = io.open(done_file, "a")
    f:write(string.format("created=%d failed=%d\n", created, failed))
    f:close()
    wrk.thread:stop()
  end
end
