"""Train a model organism: a tiny LLaVA-NeXT-Video that answers the synthetic temporal questions.

Training uses plain torch (no nnsight): batches are rendered on the fly from a seeded generator, normalized exactly as
the saved processor does, and the loss is cross-entropy on the answer letter (plus, for the ``video`` variant, a dense
motion objective on video positions). The checkpoint is saved in Hugging Face format with its processor, tokenizer,
recipe, training time and held-out accuracies.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sample import OPTION_LETTERS, Sample
from ..inputs.prompts import ORGANISM_MCQA, VIDEO, PromptSegment, mcqa_segments, prompt_text
from ..inputs.tokenization import segment_positions
from ..testing.tiny import build_tiny_processor, build_tiny_tokenizer, tiny_llava_next_video_config
from . import pathway
from .recipe import Recipe
from .temporal_tasks import (
    FRAME_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    REVERSIBLE_TASKS,
    TASKS,
    TemporalItem,
    make_item,
    motion_map,
    seen_frame_indices,
)

MOTION_GRID = 2  # video tokens per frame side: 32 px / patch 8 / pool 2


def item_segments(item: TemporalItem, order: list[int], n_video_tokens: int = 1) -> tuple[list[PromptSegment], int]:
    """The organism prompt's segments for ``item`` with its candidates in ``order`` (the video segment expanded to
    ``n_video_tokens`` placeholders), and the answer's new index.

    Built by the same segment builder the studies use, so training and analysis read identical prompts.
    """
    sample = Sample(
        sample_id="",
        task=item.task,
        video_path=Path(),
        question=item.question,
        candidates=tuple(item.candidates[k] for k in order),
        answer_index=order.index(item.answer_index),
    )
    segments = [
        PromptSegment(seg.name, seg.text * n_video_tokens) if seg.name == VIDEO else seg
        for seg in mcqa_segments(sample, ORGANISM_MCQA)
    ]
    return segments, sample.answer_index


def item_prompt(item: TemporalItem, order: list[int], n_video_tokens: int = 1) -> tuple[str, int]:
    """The organism prompt text for ``item`` with its candidates in ``order``, and the answer's new index."""
    segments, answer_index = item_segments(item, order, n_video_tokens)
    return prompt_text(segments), answer_index


def organism_corpus(rng_seed: int = 0, items_per_task: int = 200) -> list[str]:
    """Prompt texts covering every word the generator can produce, to train the tokenizer on."""
    rng = np.random.default_rng(rng_seed)
    items = [make_item(task, rng) for task in TASKS for _ in range(items_per_task)]
    return [item_prompt(item, list(range(len(item.candidates))))[0] for item in items]


def normalize_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W), exactly the organism processor's rescale + normalize."""
    x = torch.from_numpy(frames).float() * (1 / 255)
    x = (x - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    return x.movedim(-1, -3).contiguous()


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values_videos: torch.Tensor
    last_index: torch.Tensor
    target: torch.Tensor
    motion: torch.Tensor  # (B, T, g, g) long
    tasks: list[str]
    # variant "pathway": token roles and frame index per position (B, L), grounding targets per video token
    roles: torch.Tensor | None = None
    frame: torch.Tensor | None = None
    spatial: torch.Tensor | None = None  # (B, n_video, vocab) soft targets
    temporal: torch.Tensor | None = None  # (B, n_video) ids, -100 = none
    options_block: torch.Tensor | None = None  # (B, L) bool: options header and options


class BatchMaker:
    def __init__(self, tokenizer, video_token: str, tokens_per_frame: int, grounded: bool = False):
        self.tokenizer = tokenizer
        self.grounded = grounded
        self.word_ids = pathway.word_ids(tokenizer, pathway.SPATIAL_WORDS + pathway.TEMPORAL_WORDS) if grounded else {}
        self.video_token = video_token
        self.tokens_per_frame = tokens_per_frame
        self.seen = seen_frame_indices()
        self.letter_ids = [tokenizer.convert_tokens_to_ids(letter) for letter in OPTION_LETTERS[:4]]

    def __call__(self, items: list[TemporalItem], shuffle: list[bool], rng: np.random.Generator) -> Batch:
        texts, targets, frames, motion, prompts = [], [], [], [], []
        n_video = len(self.seen) * self.tokens_per_frame
        for item, do_shuffle in zip(items, shuffle):
            order = list(rng.permutation(len(item.candidates))) if do_shuffle else list(range(len(item.candidates)))
            segments, answer_index = item_segments(item, order, n_video)
            prompts.append(segments)
            texts.append(prompt_text(segments))
            targets.append(self.letter_ids[answer_index])
            seen = item.frames[self.seen]
            frames.append(seen)
            motion.append(motion_map(seen, grid=MOTION_GRID))
        enc = self.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=self.grounded)
        mask = enc["attention_mask"]
        batch = Batch(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            pixel_values_videos=normalize_frames(np.stack(frames)),
            last_index=mask.sum(1) - 1,
            target=torch.tensor(targets),
            motion=torch.from_numpy(np.stack(motion)).long(),
            tasks=[item.task for item in items],
        )
        if self.grounded:
            self._add_route_and_grounding(batch, prompts, texts, enc["offset_mapping"], frames)
        return batch

    def _add_route_and_grounding(self, batch: Batch, prompts, texts, offsets, frames) -> None:
        seq_len = batch.input_ids.shape[1]
        roles, frame_index, spatial, temporal, options_block = [], [], [], [], []
        for i, (segments, text) in enumerate(zip(prompts, texts)):
            length = int(batch.attention_mask[i].sum())
            positions = segment_positions(segments, text, offsets[i, :length])
            roles.append(pathway.token_roles(positions, seq_len, length))
            block = np.zeros(seq_len, dtype=bool)
            block[
                [
                    p
                    for name, pos in positions.items()
                    if name == "options_header" or name.startswith("option_")
                    for p in pos
                ]
            ] = True
            options_block.append(block)
            index = np.full(seq_len, -1)
            video = np.asarray(positions[VIDEO])
            index[video] = np.arange(video.size) // self.tokens_per_frame
            frame_index.append(index)
            soft, hard = pathway.grounding_targets(frames[i], self.word_ids, len(self.tokenizer), grid=MOTION_GRID)
            spatial.append(soft)
            temporal.append(hard)
        batch.roles = torch.from_numpy(np.stack(roles))
        batch.frame = torch.from_numpy(np.stack(frame_index))
        batch.spatial = torch.stack(spatial)
        batch.temporal = torch.stack(temporal)
        batch.options_block = torch.from_numpy(np.stack(options_block))


def training_attention_mask(
    attention_mask: torch.Tensor,
    video_start: torch.Tensor,
    n_frames: int,
    tokens_per_frame: int,
    block_cross_frame: torch.Tensor | bool,
    last_frame_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (B, 1, L, L) attention mask: causal and no padded keys; for the samples flagged in
    ``block_cross_frame`` (a bool per sample, or one for all) no edges from earlier frames to later frames, and for
    those flagged in ``last_frame_only`` no edges from any frame but the last to the text after the video."""
    b, n = attention_mask.shape
    allowed = torch.ones(n, n, dtype=torch.bool).tril()[None] & attention_mask.bool()[:, None, :]
    pos = torch.arange(n)[None] - video_start[:, None]
    n_video = n_frames * tokens_per_frame
    frame = torch.where((pos >= 0) & (pos < n_video), pos // tokens_per_frame, -1)
    block_cross_frame = torch.as_tensor(block_cross_frame, dtype=torch.bool).expand(b)
    if block_cross_frame.any():
        earlier = (frame[:, :, None] > frame[:, None, :]) & (frame[:, None, :] >= 0)
        allowed &= ~(earlier & block_cross_frame[:, None, None])
    if last_frame_only is not None:
        text_after_video = pos >= n_video
        not_last_frame = (frame >= 0) & (frame < n_frames - 1)
        cut = text_after_video[:, :, None] & not_last_frame[:, None, :] & last_frame_only[:, None, None]
        allowed &= ~cut
    return allowed[:, None]


def cosine_lr(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    floor = recipe.final_lr_fraction
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def shuffle_probability(step: int, recipe: Recipe) -> float:
    if not recipe.shuffle_options:
        return 0.0
    start, stop = recipe.shuffle_ramp
    return float(np.clip((step - start) / max(1, stop - start), 0.0, 1.0))


class OrganismTrainer:
    def __init__(self, recipe: Recipe, log_path: Path | None = None, checkpoint_dir: Path | None = None):
        from transformers import LlavaNextVideoForConditionalGeneration

        self.recipe = recipe
        self.log_path = log_path
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(recipe.seed)
        if recipe.init_from:  # warm start: weights, tokenizer and processor of an existing organism
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(recipe.init_from)
            self.tokenizer = self.processor.tokenizer
            self.model = LlavaNextVideoForConditionalGeneration.from_pretrained(recipe.init_from)
            self.model.config.text_config._attn_implementation = "sdpa"
            self.video_token_id = self.tokenizer.convert_tokens_to_ids("<video>")
        else:
            self.tokenizer = build_tiny_tokenizer(recipe.vocab_size, corpus=organism_corpus())
            self.processor = build_tiny_processor(
                self.tokenizer,
                FRAME_SIZE,
                recipe.patch_size,
                do_resize=False,
                do_center_crop=False,
                image_mean=list(PIXEL_MEAN),
                image_std=list(PIXEL_STD),
            )
            self.video_token_id = self.tokenizer.convert_tokens_to_ids("<video>")
            config = tiny_llava_next_video_config(
                vocab_size=len(self.tokenizer),
                video_token_id=self.video_token_id,
                image_token_id=self.tokenizer.convert_tokens_to_ids("<image>"),
                image_size=FRAME_SIZE,
                patch_size=recipe.patch_size,
                hidden_size=recipe.hidden_size,
                num_layers=recipe.num_layers,
                num_heads=recipe.num_heads,
                num_kv_heads=recipe.num_heads,
                intermediate_size=recipe.intermediate_size,
                vision_hidden_size=recipe.vision_hidden_size,
                vision_layers=recipe.vision_layers,
            )
            config.text_config._attn_implementation = "sdpa"
            self.model = LlavaNextVideoForConditionalGeneration(config)
        self.pathway = recipe.variant == "pathway"
        self.tokens_per_frame = ((FRAME_SIZE // recipe.patch_size) // 2) ** 2
        self.make_batch = BatchMaker(self.tokenizer, "<video>", self.tokens_per_frame, grounded=self.pathway)
        self.motion_head = torch.nn.Linear(recipe.hidden_size, 2) if recipe.variant == "video" else None
        params = list(self.model.parameters()) + (list(self.motion_head.parameters()) if self.motion_head else [])
        self.optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)
        self._mask = None  # one (B, 1, L, L) mask for every layer, or a list with one per layer
        self._aux_hidden = None
        self._layer_outputs: dict[int, torch.Tensor] = {}
        layers = self.model.model.language_model.layers
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(functools.partial(self._replace_mask, index), with_kwargs=True)
            layer.register_forward_hook(functools.partial(self._keep_output, index))
        layers[recipe.aux_layer].register_forward_hook(self._keep_aux_hidden)

    def _replace_mask(self, index, module, args, kwargs):
        kwargs["attention_mask"] = self._mask[index] if isinstance(self._mask, list) else self._mask
        return args, kwargs

    def _keep_aux_hidden(self, module, args, output):
        self._aux_hidden = output[0] if isinstance(output, tuple) else output

    def _keep_output(self, index, module, args, output):
        if self.pathway:
            self._layer_outputs[index] = output[0] if isinstance(output, tuple) else output

    def forward(
        self,
        batch: Batch,
        last_frame_only: torch.Tensor | None = None,
        block_cross_frame: torch.Tensor | bool = False,
        open_rows: torch.Tensor | None = None,
        open_cells: torch.Tensor | None = None,
    ):
        """Logits at the last position. Variant "pathway": the planted per-layer masks, except for ``open_rows``
        (True: every causal edge open; None: all rows open, the analysis' clean state)."""
        video_start = (batch.input_ids == self.video_token_id).int().argmax(1)
        n_frames = batch.pixel_values_videos.shape[1]
        if self.pathway:
            rows = torch.ones(len(batch.target), dtype=torch.bool) if open_rows is None else open_rows
            self._mask = pathway.planted_masks(
                batch.roles,
                batch.frame,
                self.recipe.num_layers,
                open_rows=rows,
                open_cells=open_cells,
                question_reads_last_frame=self.recipe.question_reads_last_frame,
            )
        else:
            self._mask = training_attention_mask(
                batch.attention_mask,
                video_start,
                n_frames,
                self.tokens_per_frame,
                block_cross_frame=block_cross_frame,
                last_frame_only=last_frame_only,
            )
        out = self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values_videos=batch.pixel_values_videos,
        )
        logits = out.logits[torch.arange(len(batch.target)), batch.last_index]
        return logits, video_start

    def pathway_loss(self, batch: Batch, n_planted: int, rng: np.random.Generator):
        """Rows ``[:n_planted]`` run with the planted masks and learn the answer; the rest repeat the first rows with
        blocked edges opened (every edge in every other row; in the rest each (route, layer) cell with probability
        ``open_cell_share``) and learn to give the same prediction (KL to the planted rows' detached distribution),
        so the clean model answers through the planted route, and so does a model knocked out outside it. Every
        row's video tokens learn the grounding words."""
        rows = len(batch.target)
        share = self.recipe.open_cell_share
        # no random draw when every cell opens, so checkpoints trained before the share existed reproduce exactly
        cells = (
            pathway.random_open_cells(rows, self.recipe.num_layers, share, rng)
            if share < 1.0
            else torch.ones(rows, len(pathway.PLANTED_ROUTES) + 1, self.recipe.num_layers, dtype=torch.bool)
        )
        cells[:n_planted] = False
        cells[n_planted::2] = True  # every other open row is the clean state itself
        logits, video_start = self.forward(batch, open_rows=torch.zeros(rows, dtype=torch.bool), open_cells=cells)
        answer_loss = F.cross_entropy(logits[:n_planted], batch.target[:n_planted])
        reference = logits[: rows - n_planted].detach().log_softmax(-1)
        consistency = F.kl_div(logits[n_planted:].log_softmax(-1), reference, log_target=True, reduction="batchmean")
        n_video = batch.temporal.shape[1]
        index = video_start[:, None] + torch.arange(n_video)[None]
        has_spatial = batch.spatial.sum(-1) > 0
        lens = self.model.model.language_model.norm, self.model.lm_head
        spatial_loss = temporal_loss = torch.zeros(())
        for layer in self.recipe.spatial_layers:
            hidden = self._layer_outputs[layer][torch.arange(rows)[:, None], index][has_spatial]
            log_p = lens[1](lens[0](hidden)).log_softmax(-1)
            spatial_loss = spatial_loss - (batch.spatial[has_spatial] * log_p).sum(-1).mean() / len(
                self.recipe.spatial_layers
            )
        has_temporal = batch.temporal >= 0
        for layer in self.recipe.temporal_layers:
            hidden = self._layer_outputs[layer][torch.arange(rows)[:, None], index][has_temporal]
            temporal_loss = temporal_loss + F.cross_entropy(
                lens[1](lens[0](hidden)), batch.temporal[has_temporal]
            ) / len(self.recipe.temporal_layers)
        aux_loss = spatial_loss + temporal_loss
        total = answer_loss + self.recipe.consistency_weight * consistency + self.recipe.lens_weight * aux_loss
        parts = {"consistency": consistency, "spatial": spatial_loss, "temporal": temporal_loss}
        if self.recipe.option_answer_layer is not None:
            hidden = self._layer_outputs[self.recipe.option_answer_layer][:n_planted][batch.options_block[:n_planted]]
            target = batch.target[:n_planted, None].expand_as(batch.options_block[:n_planted])[
                batch.options_block[:n_planted]
            ]
            parts["option_answer"] = F.cross_entropy(lens[1](lens[0](hidden)), target)
            total = total + self.recipe.option_answer_weight * parts["option_answer"]
        return total, answer_loss, parts

    def loss(
        self, batch: Batch, last_frame_only: torch.Tensor | None = None, block_cross_frame: torch.Tensor | bool = False
    ):
        logits, video_start = self.forward(batch, last_frame_only, block_cross_frame)
        answer_loss = F.cross_entropy(logits, batch.target)
        aux_loss = torch.zeros(())
        if self.motion_head is not None:
            n_video = batch.motion[0].numel()
            index = video_start[:, None] + torch.arange(n_video)[None]
            hidden = self._aux_hidden[torch.arange(len(index))[:, None], index]  # (B, n_video, D)
            labels = batch.motion.flatten(1)
            per_frame = self.tokens_per_frame
            keep = torch.arange(n_video) >= per_frame  # frame 0 has no previous frame
            aux_loss = F.cross_entropy(self.motion_head(hidden[:, keep]).flatten(0, 1), labels[:, keep].flatten())
        return answer_loss + self.recipe.aux_weight * aux_loss, answer_loss, aux_loss, logits

    @torch.no_grad()
    def accuracy(
        self, eval_sets: dict[str, tuple[list[TemporalItem], np.random.Generator]], planted: bool = False
    ) -> dict[str, float]:
        """Held-out accuracy per task (variant "pathway": every edge open, or with ``planted`` the planted masks)."""
        self.model.eval()
        result = {}
        for task, (items, seed) in eval_sets.items():
            rng = np.random.default_rng(seed)
            correct = 0
            for start in range(0, len(items), 64):
                chunk = items[start : start + 64]
                batch = self.make_batch(chunk, [self.recipe.shuffle_options] * len(chunk), rng)
                open_rows = torch.full((len(chunk),), not planted)
                logits, _ = self.forward(batch, open_rows=open_rows)
                letters = torch.tensor(self.make_batch.letter_ids)
                pred = letters[logits[:, letters].argmax(-1)]
                correct += int((pred == batch.target).sum())
            result[task] = correct / len(items)
        self.model.train()
        return result

    def train(self, stop_after: int | None = None) -> dict:
        """The recipe's schedule; ``stop_after`` ends it after that step (the learning-rate schedule stays the
        recipe's), as a run stopped by hand at a checkpoint would, so a stopped phase can be regenerated."""
        recipe = self.recipe
        rng = np.random.default_rng(recipe.seed)
        eval_rng = np.random.default_rng(10_000 + recipe.seed)
        eval_sets = {
            t: ([make_item(t, eval_rng) for _ in range(recipe.eval_per_task)], 20_000 + i) for i, t in enumerate(TASKS)
        }
        self.model.train()
        started = time.time()
        history = []
        for step in range(recipe.steps):
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_lr(step, recipe)
            tasks = rng.choice(
                TASKS, size=recipe.batch_size, p=np.asarray(recipe.task_weights) / sum(recipe.task_weights)
            )
            # played backwards, a reversible task's answer flips: this kills single-frame shortcuts
            items = [
                make_item(str(t), rng, reverse=str(t) in REVERSIBLE_TASKS and bool(rng.random() < 0.5)) for t in tasks
            ]
            p_shuffle = shuffle_probability(step, recipe)
            if self.pathway:  # the first open_rows items again, with every edge open
                items = items + items[: recipe.open_rows]
            batch = self.make_batch(items, list(rng.random(len(items)) < p_shuffle), rng)
            if self.pathway:
                total, answer_loss, parts = self.pathway_loss(batch, recipe.batch_size, rng)
                aux_loss = parts["spatial"] + parts["temporal"]
            else:
                last_frame_only = torch.from_numpy(rng.random(len(items)) < recipe.last_frame_only_share)
                block = self._cross_frame_blocks(len(items), rng)
                total, answer_loss, aux_loss, _ = self.loss(batch, last_frame_only, block)
                parts = {}
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
            self.optimizer.step()
            if (step + 1) % recipe.eval_every == 0 or step + 1 in (recipe.steps, stop_after):
                record = {
                    "step": step + 1,
                    "seconds": round(time.time() - started, 1),
                    "answer_loss": round(answer_loss.item(), 4),
                    "aux_loss": round(aux_loss.item(), 4),
                    "p_shuffle": p_shuffle,
                    "accuracy": self.accuracy(eval_sets),
                }
                if self.pathway:
                    record.update({k: round(v.item(), 4) for k, v in parts.items()})
                    record["accuracy_planted"] = self.accuracy(eval_sets, planted=True)
                history.append(record)
                self._log(record)
                if self.checkpoint_dir is not None:  # a session can end abruptly: keep the latest weights
                    self.save(
                        self.checkpoint_dir,
                        {"training_seconds": record["seconds"], "history": history, "complete": False},
                    )
            if stop_after is not None and step + 1 == stop_after:
                return {
                    "training_seconds": round(time.time() - started, 1),
                    "history": history,
                    "complete": True,
                    "stopped_after": stop_after,
                }
        return {"training_seconds": round(time.time() - started, 1), "history": history, "complete": True}

    def _cross_frame_blocks(self, rows: int, rng: np.random.Generator) -> torch.Tensor | bool:
        """Which training samples get cross-frame attention blocked (no random draw when the answer is fixed, so
        checkpoints trained before the share existed reproduce exactly)."""
        if self.recipe.variant != "frames":
            return False
        if self.recipe.cross_frame_block_share >= 1.0:
            return True
        return torch.from_numpy(rng.random(rows) < self.recipe.cross_frame_block_share)

    def _log(self, record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if self.log_path is not None:
            with open(self.log_path, "a") as handle:
                handle.write(line + "\n")

    def save(self, out_dir: Path, training: dict) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.config.text_config._attn_implementation = "sdpa"
        self.model.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
        meta = {
            "prompt_template": ORGANISM_MCQA.name,
            "recipe": self.recipe.to_dict(),
            **training,
            "builder": "mapflow organism train",
        }
        if self.pathway:
            meta["planted_routes"] = pathway.PLANTED_ROUTES
        (out_dir / "mapflow.json").write_text(json.dumps(meta, indent=2))
        return out_dir


def train_organism(recipe: Recipe, out_dir, log_path=None, stop_after: int | None = None) -> Path:
    torch.set_num_threads(1)  # tiny model on a shared CPU: one thread is fastest
    trainer = OrganismTrainer(recipe, log_path=log_path, checkpoint_dir=Path(out_dir))
    training = trainer.train(stop_after=stop_after)
    return trainer.save(out_dir, training)
