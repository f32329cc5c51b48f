-- `turnstone_wake_channel` as PL/pgSQL, so its query keeps its plan.
--
-- A `LANGUAGE sql` function that cannot be inlined (this one reads a table
-- and orders by random()) is parsed and planned again in every statement
-- that calls it — every message POST and every enqueue of a session's next
-- turn. PL/pgSQL caches the plan per connection. Measured with pgbench
-- (1 client, prepared, the function alone): 0.27 ms per call as SQL, 0.09 ms
-- as PL/pgSQL, 0.05 ms for `SELECT 'x'` (docs/benchmarks.md). Same query,
-- same result: a random live worker that accepts work, else every worker.

CREATE OR REPLACE FUNCTION turnstone_wake_channel(q text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN
        RETURN coalesce(
            (SELECT turnstone_worker_channel(w.name) FROM queue_workers w
              WHERE w.queue = q AND w.accepting AND w.last_seen > now() - make_interval(secs => 3 * w.heartbeat_secs)
              ORDER BY random() LIMIT 1),
            'turnstone_queue');
    END $$;
