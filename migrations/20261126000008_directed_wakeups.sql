-- Directed wake-ups: an enqueue wakes one worker, not every idle one.
--
-- Every worker LISTENs on `turnstone_queue` and on a channel of its own,
-- `turnstone_worker_channel(name)`. Enqueues on the hot path (a message's
-- turn, the next turn of a session) notify the channel `turnstone_wake_channel`
-- picks: a random live worker that accepts work, or `turnstone_queue` (every
-- worker) when there is none. A worker woken on its own channel with no free
-- slot, or while it stops, passes the wake-up on to `turnstone_queue`. Before,
-- each enqueue woke every idle worker and all but one claimed nothing: claim
-- statements per turn grew with the number of workers (1.65 with 2, 4.37
-- with 6; docs/benchmarks.md).
--
-- `accepting` is false until a worker of this version registers (older
-- workers do not listen on a channel of their own, and are never picked)
-- and again once it stops claiming. `heartbeat_secs` is the worker's
-- heartbeat period: a worker not seen for three of them is not picked (a
-- crashed worker's row lives on until the reclaim time; wake-ups sent to it
-- are lost, and its tasks wait for another worker's poll).

ALTER TABLE queue_workers
    ADD COLUMN accepting boolean NOT NULL DEFAULT false,
    ADD COLUMN heartbeat_secs double precision NOT NULL DEFAULT 5 CHECK (heartbeat_secs > 0);

CREATE FUNCTION turnstone_worker_channel(name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'turnstone_queue_' || md5(name) $$;

CREATE FUNCTION turnstone_wake_channel(q text) RETURNS text
    LANGUAGE sql VOLATILE
    AS $$ SELECT coalesce(
              (SELECT turnstone_worker_channel(w.name) FROM queue_workers w
                WHERE w.queue = q AND w.accepting AND w.last_seen > now() - make_interval(secs => 3 * w.heartbeat_secs)
                ORDER BY random() LIMIT 1),
              'turnstone_queue') $$;

GRANT SELECT ON queue_workers TO turnstone_api;
GRANT EXECUTE ON FUNCTION turnstone_worker_channel(text), turnstone_wake_channel(text) TO turnstone_api, turnstone_worker;
