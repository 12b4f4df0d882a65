-- Cache loads read the rows changed after a revision in pages ordered by (rev, id), each page
-- continuing after the last row of the one before: an index on both makes a page one range read.
CREATE INDEX provider_keys_rev_id ON provider_keys (rev, id);
DROP INDEX provider_keys_rev;
CREATE INDEX platform_keys_rev_id ON platform_keys (rev, id);
DROP INDEX platform_keys_rev;
CREATE INDEX virtual_keys_rev_id ON virtual_keys (rev, id);
DROP INDEX virtual_keys_rev;
