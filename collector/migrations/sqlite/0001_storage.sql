-- Series: one row per label set; the id is the in-memory series ref.
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    labels TEXT NOT NULL
);

-- Chunks of samples. level 0: written by a head flush; level 1: compacted into one
-- block per series and span; level 2: rollup of a level-1 block. data: see block.rs.
CREATE TABLE chunks (
    series_id INTEGER NOT NULL,
    level INTEGER NOT NULL,
    min_t INTEGER NOT NULL,
    max_t INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX chunks_by_series ON chunks (series_id, level, max_t);
CREATE INDEX chunks_by_time ON chunks (max_t);
