"""Recipes as plans of stage jobs (:mod:`.plan`): the offline demo (:mod:`.demo`), the paper's
comparison on a user's image-caption corpus (:mod:`.corpus`), the guidance-scale study
(:mod:`.guidance`); the budget every method of a comparison shares (:mod:`.budget`, :mod:`.runs`);
the comparison of methods across seeds that scores them (:mod:`.compare`); the generator's
fidelity per guidance scale (:mod:`.fidelity`).
Submodules are imported where used (they load torch)."""
