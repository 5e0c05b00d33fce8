-- The run history (issue 10), schema etl: what every step did, appended, never updated.
-- Applied idempotently by every step that writes history (bond_reporting/history.py). The api
-- schema stays what Power BI and PostgREST read; nothing here is published.
CREATE SCHEMA IF NOT EXISTS etl;

-- One row per step execution (a retried step has one row per attempt). A load's row is written
-- in the load's own transaction; a failed step's row in a transaction of its own.
CREATE TABLE IF NOT EXISTS etl.steps (
    step_id bigserial PRIMARY KEY,
    run_id text NOT NULL,           -- the Prefect flow-run id inside the flow, else a new UUID
    step text NOT NULL,             -- export | load | calculate
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    status text NOT NULL,           -- ok | failed
    error text                      -- the one-line error of a failed step
);
CREATE INDEX IF NOT EXISTS steps_run ON etl.steps (run_id);

-- What a step did per report / table / dataset. money: {"column": "exact decimal text"}.
-- Publishing appends state 'publishing' before a dataset's first write and 'verified' after its check.
CREATE TABLE IF NOT EXISTS etl.items (
    item_id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    step text NOT NULL,             -- export | load | calculate | publish
    kind text NOT NULL,             -- report | table | dataset
    name text NOT NULL,             -- report name, table name or dataset id
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    state text NOT NULL,            -- exported | loaded | computed | publishing | verified
    rows bigint,
    money jsonb,
    newest_date date,
    sha256 text,                    -- of the source bytes (reports, tables)
    destination text,               -- publishing: 'folder /abs/path' or 'https://domain'
    verified jsonb                  -- publishing: the figures the destination confirmed
);
CREATE INDEX IF NOT EXISTS items_lookup ON etl.items (kind, name, step, item_id);

-- Reconciliation notes, freshness verdicts, guard results, unmapped AIMS groups, dropped duplicates.
CREATE TABLE IF NOT EXISTS etl.notes (
    note_id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    step text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    level text NOT NULL,            -- INFO | WARNING | ERROR
    kind text NOT NULL,             -- reconcile | freshness | unchanged | guard | change | unmapped | duplicates | repair
    subject text,                   -- report, table, dataset or AIMS group id
    message text NOT NULL,          -- the line as logged
    detail jsonb
);
CREATE INDEX IF NOT EXISTS notes_run ON etl.notes (run_id);
