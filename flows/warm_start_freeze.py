"""Imported last by the fork server (``flows.warm_start.PRELOAD``), after everything else it preloads.

``gc.freeze()`` moves every object imported so far to the collector's permanent generation: collections in
a forked flow run then never walk (and so never write to, and copy) the pages of those objects, which stay
shared with the fork server instead of being duplicated in every flow run — the recipe of the ``gc``
module's documentation for processes that fork without exec.
"""

import gc

gc.collect()
gc.freeze()
