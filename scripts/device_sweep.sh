#!/usr/bin/env bash
# One-off recipe sweep on a lent device machine (16 CPU cores + 1 GPU): CUDA runs of
# train.py (AMP check, SURE) and CPU recipes in parallel, 2 threads each.
# Results come back as one tarball in $OUT. Usage: bash scripts/device_sweep.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
R=$OUT/runs; mkdir -p $R
run() { name=$1; shift; OMP_NUM_THREADS=2 timeout 440 python3 Pytorch_V1/train.py "$@" --val-size 2000 --save-every 100000 --run-dir $R/$name > $R/$name.log 2>&1; echo "$name rc=$?"; grep '^done' $R/$name.log; }
run cuda_amp --device cuda &
run sure_gpu --device cuda --loss sure --batch-size 1024 --lr 3e-3 --steps 6000 --bn-train batch &
run default --device cpu &
run sparse --device cpu --norm sparse_bn --sparsity-weight 1e-3 &
run blind_sig --device cpu --sigma 0.5:5 --weight-by sigma2 --bn-train signal --steps 6000 &
run blind_mix --device cpu --sigma 0.5:5 --weight-by sigma2 --bn-train mixed --steps 6000 &
run blind_bat --device cpu --sigma 0.5:5 --weight-by sigma2 --bn-train batch --steps 6000 &
run blind_sparse --device cpu --sigma 0.5:5 --weight-by sigma2 --bn-train signal --steps 6000 --norm sparse_bn --sparsity-weight 1e-3 &
run sure_mix --device cpu --loss sure --batch-size 512 --lr 3e-3 --steps 3000 --bn-train mixed &
run sure_b1e2 --device cpu --loss sure --batch-size 512 --lr 1e-2 --steps 3000 --bn-train batch &
wait
for f in $R/*/train_log.csv; do echo $f; tail -n 2 $f; done
rm -f $R/*/ckpt_last.pth
tar czf $OUT/sweep.tgz -C $OUT runs && rm -rf $R
