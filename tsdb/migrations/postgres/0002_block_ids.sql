-- block_id: a random id given to every level-1 block when it is written (a rewritten block
-- gets a new one); decoded blocks are cached by it, so a cached block's bytes are not read.
-- Level-0 chunks have none.
ALTER TABLE chunks ADD COLUMN block_id BIGINT;
UPDATE chunks SET block_id = (random() * 9.2e18)::BIGINT WHERE level = 1;
-- Lists a read's chunks without touching their bytes.
CREATE INDEX chunks_listing ON chunks (series_id, max_t, min_t, level, block_id);
