-- Schedules per tenant: a schedule made through the HTTP API by a tenant's key belongs to that
-- tenant (it sees and manages only its own, and the runs it starts carry its `tenant` tag);
-- schedules of the project (erpoz schedule, erpoz.yaml, Python) belong to no tenant ('-').
ALTER TABLE schedules ADD COLUMN tenant TEXT NOT NULL DEFAULT '-';

-- What a limit is, as its users last applied it: each grant records the limit and the window
-- it was granted under, each slot the concurrency limit it was taken under, so that the limits'
-- state can be read from the store (`/api/limits`, `erpoz limits`) by a process that did not
-- set them (a worker's `--rate` and `--max-running` live in its command line only).
ALTER TABLE limit_grants ADD COLUMN lim REAL;
ALTER TABLE limit_grants ADD COLUMN window_s REAL;
ALTER TABLE limit_slots ADD COLUMN lim INTEGER;
