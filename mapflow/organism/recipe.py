"""What defines a model organism: architecture, prompt, and training recipe. Saved with every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

VARIANTS = ("video", "frames", "pathway")


@dataclass(frozen=True)
class Recipe:
    """``variant="video"``: free attention plus a dense motion objective on video positions, which needs earlier
    frames and so plants early cross-frame interaction. ``variant="frames"``: cross-frame attention blocked in every
    layer during training and no auxiliary objective (the analogue of an image-only model)."""

    variant: str = "video"
    seed: int = 0
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Options in each task's canonical order (the letter names the class), as the shipped benchmark writes them.
    # With shuffled options a from-scratch organism must also learn to read option text; mixed over five tasks on a
    # CPU budget it stayed on the constant-letter plateau (measured), so shuffling is an opt-in curriculum.
    shuffle_options: bool = False
    # with shuffle_options: the probability of shuffled options ramps 0 -> 1 between these steps
    shuffle_ramp: tuple[int, int] = (1500, 2500)
    # training-only: share of samples whose text may read only the last frame's video tokens, so temporal
    # information has to be carried there by cross-frame attention among video tokens
    last_frame_only_share: float = 0.0
    # variant "frames": share of training samples with cross-frame attention blocked. 1.0 never shows the model an
    # unblocked edge, so unblocking them at analysis time is itself a perturbation (measured: -8.6 points)
    cross_frame_block_share: float = 1.0
    # task mix of the training batches (hard tasks more often), in the order of temporal_tasks.TASKS
    task_weights: tuple[float, ...] = (0.15, 0.15, 0.25, 0.30, 0.15)
    aux_weight: float = 1.0
    aux_layer: int = 2  # 0-based decoder layer whose output predicts motion at every video position
    # variant "pathway": weights (and tokenizer, processor) to start from; None trains from scratch
    init_from: str | None = None
    # variant "pathway": rows per batch repeated with every edge open (the analysis' clean state), trained to give the
    # planted-route prediction, so that opening the closed edges at analysis time is no perturbation
    open_rows: int = 8
    consistency_weight: float = 1.0
    # variant "pathway": in those open rows each blocked (route, layer) cell opens with this probability (1.0: every
    # edge open), so states between planted and clean, such as a knockout outside the planted layers, are trained too
    open_cell_share: float = 1.0
    # variant "pathway": the question reads only the last frame's video tokens in the planted video->question layers,
    # so what the earlier frames show reaches the answer only through cross-frame attention
    question_reads_last_frame: bool = False
    lens_weight: float = 0.5
    spatial_layers: tuple[int, ...] = (0, 1)  # decoder layers whose video-token output is read as spatial words
    temporal_layers: tuple[int, ...] = (3, 4, 5, 6, 7)  # ... as temporal words (after the cross-frame layers)
    # the options block (options header and options, which have read the whole question) read through the LM head
    # after this layer (the end of the planted video->question layers) learns the answer letter: a dense signal for
    # the video -> question stage, after which the last position only has to copy it (question -> last)
    option_answer_layer: int | None = None
    option_answer_weight: float = 1.0
    # architecture
    num_layers: int = 8
    hidden_size: int = 128
    intermediate_size: int = 256
    num_heads: int = 4
    vision_hidden_size: int = 64
    vision_layers: int = 2
    patch_size: int = 8
    vocab_size: int = 600
    eval_every: int = 250
    eval_per_task: int = 64

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got '{self.variant}'")

    def to_dict(self) -> dict:
        return asdict(self)
