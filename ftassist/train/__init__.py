"""The training stage: LoRA/QLoRA fine-tuning with trl's SFTTrainer, run in-process or as a job.

    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train
    result = train(TrainConfig(data="data/", out="runs/first"))

Modules: `dataset` (rows -> prompt/completion), `planner` (memory estimate, batch choice),
`callbacks` (metrics, heartbeat, NaN guard), `checkpoints` (atomic checkpoints, resume point),
`status` (status.json), `loss` (the CPU loss path), `trainer` (train()), `jobs` (background jobs),
`worker` (job entrypoint), `launch` (multi-GPU `accelerate launch` command).
"""
