"""``xbuild bench``: every backend timed side by side in one run (:mod:`.run`), inference rows
through the backends' own runners (:mod:`.inference`), training rows (:mod:`.train`), one timing
loop (:mod:`.timing`), analytic figures (:mod:`.analysis`) and device peaks (:mod:`.peaks`)."""
