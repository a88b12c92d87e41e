-- 0003: per-subject learned baselines (adaptive limiting): the normal request rate of each
-- active subject, per time-of-day bucket.
--
-- Keyed by the subject's 128-bit fingerprint (the hot path knows no more). `normal` holds one
-- little-endian float32 per bucket (NaN: never sampled); the whole table is rewritten with each
-- snapshot, as it is in memory (the window being measured included).
CREATE TABLE subject_baselines (
    subject_high    INTEGER NOT NULL,
    subject_low     INTEGER NOT NULL,
    window_start_ns INTEGER NOT NULL,
    window_hits     INTEGER NOT NULL,
    last_seen_ns    INTEGER NOT NULL,
    samples         INTEGER NOT NULL,
    normal          BLOB    NOT NULL,
    PRIMARY KEY (subject_high, subject_low)
) WITHOUT ROWID;
