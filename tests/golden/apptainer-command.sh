export HF_DATASETS_OFFLINE=1
export HF_HOME='/scratch/it'"'"'s a "study" $HOME/cache/hf-home'
export HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_OFFLINE=1
export PYTHONNOUSERSITE=1
export TRANSFORMERS_OFFLINE=1
for hpcf_v in $(compgen -e); do case "$hpcf_v" in SLURM_*|CUDA_VISIBLE_DEVICES|HF_HUB_OFFLINE|HF_DATASETS_OFFLINE|TRANSFORMERS_OFFLINE|HF_HOME|HF_HUB_CACHE|HPC_FORGET_*|OMP_NUM_THREADS|MKL_NUM_THREADS|HF_HUB_DISABLE_TELEMETRY|PYTHONNOUSERSITE) export "APPTAINERENV_$hpcf_v=${!hpcf_v}" ;; esac; done
apptainer exec --nv --cleanenv --bind '/scratch/it'"'"'s a "study" $HOME/store:/scratch/it'"'"'s a "study" $HOME/store' --bind '/scratch/it'"'"'s a "study" $HOME/cache:/scratch/it'"'"'s a "study" $HOME/cache' --bind '/scratch/it'"'"'s a "study" $HOME/run:/scratch/it'"'"'s a "study" $HOME/run' '/images/hpc forget.sif' python -m hpc_forget.worker '/scratch/it'"'"'s a "study" $HOME/run/manifests/chains-0.json'
