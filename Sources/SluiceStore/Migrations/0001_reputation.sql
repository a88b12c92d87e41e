-- 0001: reputation scores and the events that moved them.
--
-- subject_key is 64 bits of the subject's stable fingerprint (tenant and subject hashed): integer
-- keys keep writes fast. Two subjects sharing one would share a row; at a million subjects the
-- chance that any two do is about 3 in 100 million.

-- One row per tracked subject: the score as measured at updated_ns (decay is applied on read).
-- Subjects back at neutral are deleted by compaction, so this holds only subjects that matter.
-- last_event_id: the newest of its events, where the chain of its events starts.
CREATE TABLE reputation_scores (
    subject_key   INTEGER PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    score         REAL    NOT NULL CHECK (score >= 0 AND score <= 100),
    updated_ns    INTEGER NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    events        INTEGER NOT NULL DEFAULT 0 CHECK (events >= 0),
    last_event_id INTEGER NOT NULL DEFAULT 0
);

-- Every event, in commit order (id). Expired from the oldest id by retention and max_events.
-- previous_id is the id of the same subject's event before this one (0: none), so that a
-- subject's recent events are a walk back from its newest, by primary key. No secondary index:
-- with one, inserts slowed from over 600,000 to under 200,000 a second once it outgrew the
-- page cache.
CREATE TABLE reputation_events (
    id          INTEGER PRIMARY KEY,
    subject_key INTEGER NOT NULL,
    previous_id INTEGER NOT NULL,
    tenant      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    weight      REAL    NOT NULL,
    at_ns       INTEGER NOT NULL,
    note        TEXT    NOT NULL DEFAULT ''
);

-- Bookkeeping. records_through_event_id: every event with an id up to it is reflected in
-- reputation_scores; events after it are replayed onto the scores at start (scores are written
-- less often than events).
CREATE TABLE reputation_meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
