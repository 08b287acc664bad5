-- pgbench script: the raw two-insert transaction an ingest needs (a proposal row and an audit
-- row of similar size), without countersign's validation, hashing or chain serialisation.
BEGIN;
INSERT INTO raw_proposals (id, agent_id, status, content, created_at, updated_at)
VALUES (gen_random_uuid()::text, 'revops-crm', 'pending', repeat('x', 1100), now(), now());
INSERT INTO raw_audit (at, kind, proposal_id, actor, data, prev_hash, hash)
VALUES (now(), 'proposal.submitted', 'p', 'agent:revops-crm', repeat('y', 400), repeat('0', 64), md5(random()::text) || md5(random()::text));
COMMIT;
