"""The cluster: Slurm profiles, sbatch scripts, run folders, submit/status/resubmit/cancel,
the worker each array task runs, Apptainer command lines and prefetching. May import every
stage but analysis."""
