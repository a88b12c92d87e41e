-- 0002: subjects' tiers (VIP, standard, best effort …), assigned by operators.
--
-- One row per subject with a tier; the tier is a name from the configuration's `tiers`, so a
-- tier removed from the configuration leaves rows that simply no longer apply.
CREATE TABLE subject_tiers (
    subject_key INTEGER PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    tier        TEXT    NOT NULL,
    assigned_ns INTEGER NOT NULL
);
