-- The budget ledger, shared by every process of the store (erpoz.store._ledger): what each scope
-- ("project", "tenant:NAME") has spent, and the holds of paid calls in flight. A call reserves
-- its estimate before it is sent and settles to its actual cost after; an expired hold (its
-- process died mid-call) is charged at its estimate (`charged`; a late settle corrects it to
-- the actual cost, and charged holds are dropped after a day).
CREATE TABLE budget_spent (
    scope   TEXT PRIMARY KEY,
    spent   REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE budget_holds (
    hold_id TEXT NOT NULL,
    scope   TEXT NOT NULL,
    amount  REAL NOT NULL,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL,
    charged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hold_id, scope)
) WITHOUT ROWID;
CREATE INDEX budget_holds_by_scope ON budget_holds (scope);
