-- Schedules per tenant: a schedule made through the HTTP API by a tenant's key belongs to that
-- tenant (it sees and manages only its own, and the runs it starts carry its `tenant` tag);
-- schedules of the project (erpoz schedule, erpoz.yaml, Python) belong to no tenant ('-').
ALTER TABLE schedules ADD COLUMN tenant TEXT NOT NULL DEFAULT '-';
