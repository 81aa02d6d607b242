"""Getting data in: per-event API validation (``validate``), column-wise cleaning
(``bulk``), file readers (``files``), public dataset loaders (``datasets``), bulk
import into a store (``importer``) and the ``shopcast import`` commands (``cli``)."""
