"""What sparkspec keeps on disk between runs: the lock, the cache, digests, the journal, the apply lock."""
