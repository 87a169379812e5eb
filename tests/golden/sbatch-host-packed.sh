#!/bin/bash

# Parameters
#SBATCH --array=0-2
#SBATCH --chdir='/scratch/it'"'"'s a "study" $HOME'
#SBATCH --cpus-per-task=1
#SBATCH --job-name=hf-demo-independent
#SBATCH --mem=2G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output='/scratch/it'"'"'s a "study" $HOME/runs/demo 100%%/logs/independent-0-%A_%a.log'
#SBATCH --partition=debug
#SBATCH --requeue
#SBATCH --signal=B:USR1@30
#SBATCH --time=30
#SBATCH --wckey=hpc-forget

# command
# one thread per allocated CPU unless the profile's setup chose otherwise
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
# packed: each element runs up to 8 tasks one after another on one loaded model; a requeue resumes at its first unfinished task
export HF_DATASETS_OFFLINE=1
export HF_HOME='/scratch/it'"'"'s a "study" $HOME/cache/hf-home'
export HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_OFFLINE=1
export PYTHONNOUSERSITE=1
export TRANSFORMERS_OFFLINE=1
hpcf_signal=
hpcf_pid=
hpcf_forward() {
    hpcf_signal=$1
    echo "hpc-forget: batch script got SIG$1; forwarding it to the worker" >&2
    if [ -n "$hpcf_pid" ]; then kill -s "$1" "$hpcf_pid" 2>/dev/null; fi
}
trap 'hpcf_forward USR1' USR1
trap 'hpcf_forward TERM' TERM
/opt/venv/bin/python -m hpc_forget.worker '/scratch/it'"'"'s a "study" $HOME/runs/demo 100%/manifests/independent-0.json' &
hpcf_pid=$!
while :; do
    wait "$hpcf_pid"
    hpcf_rc=$?
    kill -0 "$hpcf_pid" 2>/dev/null || break  # wait returned for a signal: wait again
done
if [ "$hpcf_rc" -eq 75 ] && [ "$hpcf_signal" = USR1 ] && [ "${SLURM_RESTART_COUNT:-0}" -lt 10 ]; then
    # this element only: an element's SLURM_JOB_ID can equal the array's id, which names the whole array
    hpcf_self="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"
    hpcf_self="${hpcf_self:-$SLURM_JOB_ID}"
    echo "hpc-forget: requeueing job $hpcf_self (restart $((${SLURM_RESTART_COUNT:-0} + 1)) of at most 10)" >&2
    scontrol requeue "$hpcf_self" && exit 0
fi
exit "$hpcf_rc"
