// Stub of the storage package (@openmaic/storage and its subpaths: IndexedDB, HTTP and
// PostgreSQL stores behind the asset pool and persistence). The scene loop reaches storage
// only through the asset pool, which is stubbed (media.mjs): this stub exports nothing, so a
// name imported from it is a missing name, and its use during a run a harness error.
export {};
