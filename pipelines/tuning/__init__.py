"""The tune stage's helpers: ``tune.space`` as a Ray Tune search space (:mod:`.search_space`) and the Tune
function that trains one trial (:mod:`.trial`)."""
