#!/bin/bash

# Parameters
#SBATCH --account=my-project
#SBATCH --array=0-1000%50
#SBATCH --chdir='/scratch/it'"'"'s a "study" $HOME'
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:a100:2
#SBATCH --job-name=hf-paper-independent
#SBATCH --mail-type=FAIL
#SBATCH --mem=32G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output='/scratch/it'"'"'s a "study" $HOME/runs/demo 100%%/logs/r1-independent-3-%A_%a.log'
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --time=240
#SBATCH --wckey=hpc-forget

# setup
module load apptainer 2>/dev/null || true

# command
# the task's CPUs shared by its 2 processes unless the setup chose otherwise
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-1} >= 2 ? ${SLURM_CPUS_PER_TASK:-1} / 2 : 1 ))}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
hpcf_port=$((20000 + ${SLURM_JOB_ID:-0} % 20000))  # per-job rendezvous port
# torchrun dies of SIGUSR1 and does not pass it on: the warning becomes a stop
# request that every rank polls, and rank 0 records its exit code beside it
_hpcf_job="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"
hpcf_stop='/scratch/it'"'"'s a "study" $HOME/runs/demo 100%/stop'/"${_hpcf_job:-$SLURM_JOB_ID}"
mkdir -p '/scratch/it'"'"'s a "study" $HOME/runs/demo 100%/stop' && rm -f "$hpcf_stop" "$hpcf_stop.exit"
export HF_DATASETS_OFFLINE=1
export HF_HOME='/scratch/it'"'"'s a "study" $HOME/cache/hf-home'
export HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_OFFLINE=1
export PYTHONNOUSERSITE=1
export TRANSFORMERS_OFFLINE=1
for hpcf_v in $(compgen -e); do case "$hpcf_v" in SLURM_*|CUDA_VISIBLE_DEVICES|HF_HUB_OFFLINE|HF_DATASETS_OFFLINE|TRANSFORMERS_OFFLINE|HF_HOME|HF_HUB_CACHE|HPC_FORGET_*|OMP_NUM_THREADS|MKL_NUM_THREADS|HF_HUB_DISABLE_TELEMETRY|PYTHONNOUSERSITE) export "APPTAINERENV_$hpcf_v=${!hpcf_v}" ;; esac; done
hpcf_signal=
hpcf_pid=
hpcf_forward() {
    hpcf_signal=$1
    echo "hpc-forget: batch script got SIG$1; forwarding it to the worker" >&2
    if [ "$1" = USR1 ]; then : > "$hpcf_stop"
    elif [ -n "$hpcf_pid" ]; then kill -s "$1" "$hpcf_pid" 2>/dev/null; fi
}
trap 'hpcf_forward USR1' USR1
trap 'hpcf_forward TERM' TERM
apptainer exec --nv --cleanenv --bind '/scratch/it'"'"'s a "study" $HOME/store:/scratch/it'"'"'s a "study" $HOME/store' --bind '/scratch/it'"'"'s a "study" $HOME/cache:/scratch/it'"'"'s a "study" $HOME/cache' --bind '/scratch/it'"'"'s a "study" $HOME/runs/demo 100%:/scratch/it'"'"'s a "study" $HOME/runs/demo 100%' --bind '/scratch/it'"'"'s a "study" $HOME:/scratch/it'"'"'s a "study" $HOME' '/images/hpc forget.sif' python -m accelerate.commands.launch --config_file '/scratch/it'"'"'s a "study" $HOME/runs/demo 100%/accelerate.yaml' --num_processes 2 --num_machines 1 --main_process_port "$hpcf_port" -m hpc_forget.worker '/scratch/it'"'"'s a "study" $HOME/runs/demo 100%/manifests/r1-independent-3.json' &
hpcf_pid=$!
while :; do
    wait "$hpcf_pid"
    hpcf_rc=$?
    kill -0 "$hpcf_pid" 2>/dev/null || break  # wait returned for a signal: wait again
done
# rank 0's own exit code, not the launcher's (digits only)
if [ -f "$hpcf_stop.exit" ]; then
    hpcf_code=$(head -c 8 "$hpcf_stop.exit" | tr -cd 0-9)
    hpcf_rc=${hpcf_code:-$hpcf_rc}
fi
if [ "$hpcf_rc" -eq 75 ] && [ "$hpcf_signal" = USR1 ] && [ "${SLURM_RESTART_COUNT:-0}" -lt 20 ]; then
    # this element only: an element's SLURM_JOB_ID can equal the array's id, which names the whole array
    hpcf_self="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"
    hpcf_self="${hpcf_self:-$SLURM_JOB_ID}"
    echo "hpc-forget: requeueing job $hpcf_self (restart $((${SLURM_RESTART_COUNT:-0} + 1)) of at most 20)" >&2
    scontrol requeue "$hpcf_self" && exit 0
fi
exit "$hpcf_rc"
