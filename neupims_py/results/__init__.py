"""Results people can look at: the Chrome trace of a run (`run --chrome-trace`), plots of a
run's outputs (`neupims-sim report`) and side-by-side runs (`neupims-sim compare`)."""
