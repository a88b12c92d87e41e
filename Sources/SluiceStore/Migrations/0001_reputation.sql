-- 0001: reputation scores and the events that moved them.

-- One row per tracked subject: the score as measured at updated_ns (decay is applied on read).
-- Subjects back at neutral are deleted by compaction, so this holds only subjects that matter.
CREATE TABLE reputation_scores (
    tenant     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    score      REAL    NOT NULL CHECK (score >= 0 AND score <= 100),
    updated_ns INTEGER NOT NULL,
    pinned     INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    events     INTEGER NOT NULL DEFAULT 0 CHECK (events >= 0),
    PRIMARY KEY (tenant, subject)
) WITHOUT ROWID;

-- Every event, in commit order (id). Expired from the oldest id by retention and max_events.
-- subject_key is 64 bits of the subject's stable fingerprint: the index on it is small and
-- appended to in id order, which keeps ingestion fast; tenant and subject settle collisions.
CREATE TABLE reputation_events (
    id          INTEGER PRIMARY KEY,
    subject_key INTEGER NOT NULL,
    tenant      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    weight      REAL    NOT NULL,
    at_ns       INTEGER NOT NULL,
    note        TEXT    NOT NULL DEFAULT ''
);

-- A subject's recent events (GetReputation), newest id first.
CREATE INDEX reputation_events_by_subject ON reputation_events (subject_key, id);
