-- A worker whose process died stops being woken at the next heartbeat of any
-- other worker.
--
-- Enqueues wake one accepting worker seen within three heartbeats
-- (`turnstone_wake_channel`, migration 08). A worker killed without a chance
-- to say so stayed pickable for those three heartbeats (15 s by default), and
-- each wake-up sent to it waited for another worker's poll. Each worker now
-- records the backend that carries its LISTEN: `listener_pid`, and
-- `listener_started` (that backend's start time, when pg_stat_activity shows
-- it to the worker's role) so that a reused pid is not mistaken for it. When
-- a worker's process dies the kernel closes its connections and that backend
-- exits; the next heartbeat of any other worker then sets `accepting = false`
-- on it (`queue::heartbeat`). A worker's own heartbeat writes its listener and
-- `accepting` back where they differ (`queue::reassert_listener`): another
-- worker's snapshot of pg_stat_activity can predate a reconnect. A NULL
-- `listener_pid` (an older worker) leaves the heartbeat rule alone in charge.

ALTER TABLE queue_workers
    ADD COLUMN listener_pid integer,
    ADD COLUMN listener_started timestamptz;
