#!/usr/bin/env bash
# One-off recipe sweep on a lent device machine: a CUDA/AMP run of train.py plus
# CPU recipes in parallel (2 threads each). Results are tarred into $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
R=$OUT/runs; mkdir -p $R
run() { name=$1; shift; OMP_NUM_THREADS=2 timeout 330 python3 Pytorch_V1/train.py "$@" --val-size 2000 --eval-every 250 --save-every 5000 --ckpt-dir $R/$name > $R/$name.log 2>&1; echo "$name rc=$?"; grep '^done' $R/$name.log; }
run cuda --device cuda --steps 3000 &
run b128 --device cpu --steps 3000 --batch-size 128 --lr 3e-3 --bn-train batch &
run b256 --device cpu --steps 3000 --batch-size 256 --lr 3e-3 --bn-train batch &
run b128lr1e2 --device cpu --steps 3000 --batch-size 128 --lr 1e-2 --bn-train batch &
run m128 --device cpu --steps 3000 --batch-size 128 --lr 3e-3 --bn-train mixed &
run b256lr6e3s4k --device cpu --steps 4000 --batch-size 256 --lr 6e-3 --bn-train batch &
run noprior --device cpu --steps 3000 --batch-size 128 --lr 3e-3 --bn-train batch --no-prior &
run blind --device cpu --steps 3000 --batch-size 128 --lr 3e-3 --bn-train mixed --sigma 0.5:5 &
run sure --device cpu --steps 3000 --batch-size 128 --lr 3e-3 --bn-train batch --loss sure &
wait
for f in $R/*/train_log.csv; do echo $f; tail -n 3 $f; done
rm -f $R/*/ckpt_last.pth
tar czf $OUT/sweep.tgz -C $OUT runs && rm -rf $R
