"""The data layer: datasets behind one interface (:mod:`.base`, one module each in :mod:`.datasets`),
batches on the device (:mod:`.device`), streamed image folders (:mod:`.streaming`) and corrupted
test sets behind one interface (:mod:`.corrupted`). Imports only the foundations (and the
corruption functions)."""
