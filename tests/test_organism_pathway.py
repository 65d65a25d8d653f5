"""organism-pathway: the planted route masks, the grounding targets, the recipe, and the recovery targets."""

import json

import numpy as np
import pytest
import torch

from mapflow.embedded import DATA_DIR
from mapflow.organism import pathway
from mapflow.organism.pathway import LAST, OTHER, PAD, PRE, QUESTION, VIDEO
from mapflow.organism.temporal_tasks import BACKGROUND, COLORS, scene_image

PATHWAY = DATA_DIR / "models" / "organism-pathway"
BENCH = DATA_DIR / "temporal-bench"
NUM_LAYERS = 8

# a toy prompt: 2 pre tokens, 3 frames x 2 video tokens, 1 bridge, 4 question tokens, 2 answer-prompt tokens, last, pad
ROLES = [PRE, PRE] + [VIDEO] * 6 + [OTHER] + [QUESTION] * 4 + [OTHER] * 2 + [LAST, PAD]
FRAME = [-1, -1, 0, 0, 1, 1, 2, 2] + [-1] * 9


def toy_masks(open_row: bool = False):
    roles = torch.tensor([ROLES])
    frame = torch.tensor([FRAME])
    return [m[0, 0] for m in pathway.planted_masks(roles, frame, NUM_LAYERS, open_rows=torch.tensor([open_row]))]


def positions(role):
    return [i for i, r in enumerate(ROLES) if r == role]


def reaches_last(masks, sources) -> bool:
    """Whether information at ``sources`` can reach the last position through the per-layer allowed edges."""
    carrying = np.zeros(len(ROLES), dtype=bool)
    carrying[sources] = True
    for mask in masks:
        allowed = mask.numpy()
        carrying = carrying | (allowed & carrying[None, :]).any(1)
    return bool(carrying[ROLES.index(LAST)])


def test_planted_edges_are_open_only_in_their_layers():
    masks = toy_masks()
    video, question, other = positions(VIDEO), positions(QUESTION), positions(OTHER)
    last = ROLES.index(LAST)
    for layer, mask in enumerate(masks):
        assert not mask[last, video].any()  # video -> last closed everywhere
        assert not mask[np.ix_(other, video + question)].any()  # no relay through the other text
        assert bool(mask[np.ix_(question, video)].all()) == (layer in (3, 4))
        assert bool(mask[last, question].all()) == (layer in (5, 6, 7))
        assert bool(mask[4, 2]) == (layer in (0, 1, 2))  # frame 1 reads frame 0 only in the cross-frame layers
        assert mask[3, 2] and mask[last, last]  # within-frame and last -> last stay open
        assert not mask[:, ROLES.index(PAD)].any() and not mask.triu(1).any()


def test_the_only_route_from_video_to_last_is_the_planted_one():
    masks = toy_masks()
    assert reaches_last(masks, positions(VIDEO))
    # without video -> question nothing of the video reaches the last position, nor without question -> last
    no_vq = [m.clone() for m in masks]
    for m in no_vq:
        m[np.ix_(positions(QUESTION), positions(VIDEO))] = False
    assert not reaches_last(no_vq, positions(VIDEO))
    no_ql = [m.clone() for m in masks]
    for m in no_ql:
        m[ROLES.index(LAST), positions(QUESTION)] = False
    assert not reaches_last(no_ql, positions(VIDEO))


def test_open_rows_keep_every_causal_edge():
    for mask in toy_masks(open_row=True):
        causal = torch.ones(len(ROLES), len(ROLES), dtype=torch.bool).tril()
        causal[:, ROLES.index(PAD)] = False
        assert torch.equal(mask, causal)


def _masks(**kwargs):
    roles, frame = torch.tensor([ROLES]), torch.tensor([FRAME])
    return [m[0, 0] for m in pathway.planted_masks(roles, frame, NUM_LAYERS, **kwargs)]


def test_open_cells_open_exactly_their_route_and_layer():
    planted = _masks()
    routes = list(pathway.PLANTED_ROUTES)
    for index, route in enumerate([*routes, "relay"]):
        for layer in (1, 6):
            cells = torch.zeros(1, len(routes) + 1, NUM_LAYERS, dtype=torch.bool)
            cells[0, index, layer] = True
            masks = _masks(open_cells=cells)
            for other in range(NUM_LAYERS):
                if other != layer:
                    assert torch.equal(masks[other], planted[other]), (route, layer, other)
            opened = masks[layer] & ~planted[layer]
            last, video, question = ROLES.index(LAST), positions(VIDEO), positions(QUESTION)
            expected = {
                "cross_frame": opened[4, 2],
                "video->question": opened[np.ix_(question, video)].all(),
                "question->last": opened[last, question].all(),
                "video->last": opened[last, video].all(),
                "relay": opened[np.ix_(positions(OTHER)[1:], video + question)].all(),
            }  # after the question
            inside = route in routes and layer in pathway.layers_of(pathway.PLANTED_ROUTES[route])
            assert bool(expected[route]) == (not inside), (route, layer)
            assert not (masks[layer] & ~planted[layer] & ~_masks(open_rows=torch.tensor([True]))[layer]).any()
    all_open = torch.ones(1, len(routes) + 1, NUM_LAYERS, dtype=torch.bool)
    assert all(torch.equal(a, b) for a, b in zip(_masks(open_cells=all_open), toy_masks(open_row=True)))


def test_question_reading_the_last_frame_makes_cross_frame_necessary():
    masks = _masks(question_reads_last_frame=True)
    question, last_frame = positions(QUESTION), [6, 7]
    for layer, mask in enumerate(masks):
        assert bool(mask[np.ix_(question, last_frame)].all()) == (layer in (3, 4))
        assert not mask[np.ix_(question, [2, 3, 4, 5])].any()
    frame0 = [2, 3]
    assert reaches_last(masks, frame0)
    no_cross = [m.clone() for m in masks]
    for m in no_cross:
        m[np.ix_(positions(VIDEO), positions(VIDEO))] &= torch.tensor(
            [[FRAME[q] == FRAME[k] for k in positions(VIDEO)] for q in positions(VIDEO)]
        )
    assert not reaches_last(no_cross, frame0) and reaches_last(no_cross, last_frame)


def _frames(steps=3):
    frames = np.empty((steps, 32, 32, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    return frames


def test_grounding_words_name_colour_shape_and_change():
    frames = _frames()
    frames[0, 2:8, 2:8] = COLORS["red"]  # a red square in the top-left cell ...
    frames[1, 2:8, 5:11] = COLORS["red"]  # ... moving right by 3 px
    frames[2, 2:8, 5:11] = COLORS["red"]  # ... and resting
    frames[1:, 20:28, 20:28] = scene_image("snow")[20:28, 20:28]  # no scene: under half the cell
    spatial, temporal = pathway.grounding_words(frames)
    assert spatial[0] == ("red", "square") and spatial[3] == ()
    assert temporal[:4] == [None] * 4  # frame 0 has no previous frame
    assert temporal[4] == "right" and temporal[8] is None

    grow = _frames()
    grow[:, :] = scene_image("beach")
    grow[0, 18:23, 18:23] = COLORS["cyan"]
    grow[1, 17:25, 17:25] = COLORS["cyan"]
    grow[2, :16, :16] = scene_image("night")[:16, :16]
    spatial, temporal = pathway.grounding_words(grow)
    assert spatial[0] == ("beach",) and spatial[3] == ("cyan", "square")
    assert temporal[7] == "grows"  # frame 1, bottom-right cell
    assert temporal[8] == "change" and spatial[8] == ("night",)


def test_grounding_words_see_circles_appear_and_disappear():
    frames = _frames()
    yy, xx = np.mgrid[0:8, 0:8]
    circle = (xx - 3.5) ** 2 + (yy - 3.5) ** 2 <= 16.25
    frames[1, 18:26, 4:12][circle] = COLORS["green"]
    spatial, temporal = pathway.grounding_words(frames)
    assert spatial[4 + 2] == ("green", "circle")
    assert temporal[4 + 2] == "appears" and temporal[8 + 2] == "disappears"


def test_every_grounding_word_is_one_token_and_a_keyword():
    from transformers import AutoTokenizer

    from mapflow.readouts.keywords import load_keywords, piece_table

    tokenizer = AutoTokenizer.from_pretrained(DATA_DIR / "models" / "organism-video")
    ids = pathway.word_ids(tokenizer, pathway.SPATIAL_WORDS + pathway.TEMPORAL_WORDS)
    table = piece_table(tokenizer, load_keywords("organism"))
    for kind, words in (("spatial", pathway.SPATIAL_WORDS), ("temporal", pathway.TEMPORAL_WORDS)):
        for word in words:
            # what the logit lens sees when the top-1 token is this word's id
            seen = tokenizer.decode([ids[word]]).strip().lower()
            assert table.get(seen, ("",))[0] == kind, (word, seen)


def test_token_roles_follow_the_prompt_segments():
    from mapflow.organism.recipe import Recipe
    from mapflow.organism.temporal_tasks import make_item
    from mapflow.organism.train import OrganismTrainer

    trainer = OrganismTrainer(Recipe(variant="pathway", init_from=str(DATA_DIR / "models" / "organism-video")))
    rng = np.random.default_rng(0)
    items = [make_item("object_count", rng), make_item("moving_direction", rng)]
    batch = trainer.make_batch(items, [False, False], rng)
    for row in range(2):
        tokens = trainer.tokenizer.convert_ids_to_tokens(batch.input_ids[row].tolist())
        roles = batch.roles[row].tolist()
        length = int(batch.attention_mask[row].sum())
        assert roles[length - 1] == LAST and all(r == PAD for r in roles[length:])
        assert [t for t, r in zip(tokens, roles) if r == VIDEO] == ["<video>"] * 32
        question = "".join(t for t, r in zip(tokens, roles) if r == QUESTION).replace("Ġ", " ")
        assert question.startswith("Question:") and question.endswith(items[row].candidates[-1])  # to the last option
        other = "".join(t for t, r in zip(tokens, roles) if r == OTHER)
        assert "ASSISTANT" in other
        assert batch.frame[row][batch.roles[row] == VIDEO].tolist() == [f for f in range(8) for _ in range(4)]
    assert batch.spatial.shape[:2] == batch.temporal.shape == (2, 32)


def test_the_pathway_recipe_trains_and_records_its_routes(tmp_path):
    from mapflow.organism.recipe import Recipe
    from mapflow.organism.train import train_organism

    recipe = Recipe(
        variant="pathway",
        steps=2,
        batch_size=3,
        open_rows=2,
        eval_every=2,
        eval_per_task=2,
        option_answer_layer=4,
        hidden_size=32,
        intermediate_size=64,
        vision_hidden_size=16,
        vocab_size=460,
    )
    path = train_organism(recipe, tmp_path / "organism")
    meta = json.loads((path / "mapflow.json").read_text())
    assert meta["planted_routes"] == pathway.PLANTED_ROUTES
    record = meta["history"][-1]
    assert {"consistency", "spatial", "temporal", "option_answer", "accuracy_planted"} <= set(record)
    assert all(np.isfinite(record[k]) for k in ("consistency", "spatial", "temporal", "option_answer"))


def test_a_phase_stopped_after_a_step_keeps_its_schedule_and_trains_the_cell_options(tmp_path):
    from mapflow.organism.recipe import Recipe
    from mapflow.organism.train import train_organism

    recipe = Recipe(
        variant="pathway",
        steps=6,
        batch_size=2,
        open_rows=2,
        eval_every=10,
        eval_per_task=1,
        open_cell_share=0.5,
        question_reads_last_frame=True,
        warmup_steps=1,
        hidden_size=32,
        intermediate_size=64,
        vision_hidden_size=16,
        vocab_size=460,
    )
    path = train_organism(recipe, tmp_path / "stopped", stop_after=2)
    meta = json.loads((path / "mapflow.json").read_text())
    assert meta["stopped_after"] == 2 and meta["complete"] and [h["step"] for h in meta["history"]] == [2]
    assert meta["recipe"]["steps"] == 6 and meta["recipe"]["open_cell_share"] == 0.5


@pytest.mark.parametrize("share,draws", [(1.0, False), (0.5, True)])
def test_open_cells_draw_from_the_training_stream_only_when_some_stay_shut(share, draws):
    """Every cell open (the recipe before --open-cell-share) draws nothing, so earlier phases regenerate exactly."""
    from mapflow.organism.recipe import Recipe
    from mapflow.organism.temporal_tasks import make_item
    from mapflow.organism.train import OrganismTrainer

    recipe = Recipe(
        variant="pathway",
        batch_size=2,
        open_rows=2,
        open_cell_share=share,
        hidden_size=32,
        intermediate_size=64,
        vision_hidden_size=16,
        vocab_size=460,
    )
    trainer = OrganismTrainer(recipe)
    rng = np.random.default_rng(0)
    items = [make_item("action_antonym", rng) for _ in range(2)]
    batch = trainer.make_batch(items + items, [False] * 4, rng)
    before = rng.bit_generator.state
    trainer.pathway_loss(batch, 2, rng)
    assert (rng.bit_generator.state != before) == draws


def test_planted_routes_study_reads_inside_and_outside(tmp_path):
    from studies.planted_routes import planted_layers

    sets = planted_layers(pathway.PLANTED_ROUTES, NUM_LAYERS)
    assert sets["video->question"] == {"inside": (3, 4), "outside": (0, 1, 2, 5, 6, 7)}
    assert sets["video->last"]["inside"] == () and sets["video->last"]["outside"] == tuple(range(8))
    from mapflow.errors import KnockoutConfigError

    with pytest.raises(KnockoutConfigError, match="reaches outside"):
        planted_layers({"cross_frame": [[0, 9]]}, NUM_LAYERS)


# The recovery targets, re-measured in four parts (one test each, so pytest-xdist can run them on separate workers;
# together they are `mapflow organism verify` on the shipped split): the numbers recorded in mapflow.json must
# reproduce up to argmax flips from float rounding, and a part whose recorded targets the shipped checkpoint misses is
# reported (xfail).


@pytest.fixture(scope="module")
def recorded():
    return json.loads((PATHWAY / "mapflow.json").read_text())["verification"]


def test_the_shipped_pathway_organism_records_its_routes_and_verification():
    meta = json.loads((PATHWAY / "mapflow.json").read_text())
    assert meta["planted_routes"] == pathway.PLANTED_ROUTES and meta["recipe"]["variant"] == "pathway"
    assert {"routes", "table_e", "effective_pathway", "logit_lens"} <= set(meta["verification"])


def _verification(recorded, out_dir):
    from mapflow.organism.verify import Verification

    return Verification.open(PATHWAY, BENCH, out_dir, limit=recorded["samples_per_task"], progress=False)


def _flip_tolerances(recorded) -> tuple[float, float]:
    """Accuracies are counts over N samples per task: a float-rounding flip of one argmax moves a task by 100 / N
    points and a mean over the five tasks by a fifth of that; allow two flips on each side of a difference."""
    from mapflow.data import load_tvbench

    per_task = recorded["samples_per_task"] or len(load_tvbench(BENCH, tasks=["action_antonym"]))
    return 2 * 100 / per_task, 4 * 100 / per_task / 5


def _missed(summary: dict, part: str) -> list[str]:
    """The targets of one part (routes, table_e, effective_pathway, logit_lens) that ``summary`` records as missed."""
    if part == "routes":
        checks = {
            "clean accuracy": summary["routes"]["clean_ok"],
            **{f"route {flow}": entry["ok"] for flow, entry in summary["routes"]["flows"].items()},
        }
    elif part == "table_e":
        checks = {f"Table E {flow}": entry["ok"] for flow, entry in summary["table_e"].items()}
    else:
        checks = {part.replace("_", " "): summary[part]["ok"]}
    return [name for name, ok in checks.items() if not ok]


def _xfail_if_the_record_misses(recorded, part):
    # the counted targets are met again up to the flips (implied by the checks before this call)
    missed = _missed(recorded, part)
    if missed:
        pytest.xfail(f"organism-pathway misses: {', '.join(missed)} (see docs/organisms.md, organism-pathway)")


@pytest.mark.slow
def test_shipped_pathway_organism_recovers_the_routes(recorded, tmp_path):
    from mapflow.organism.verify import measure_routes

    measured = measure_routes(_verification(recorded, tmp_path))
    task_tolerance, mean_tolerance = _flip_tolerances(recorded)
    for task, value in recorded["routes"]["clean_percent"].items():
        assert measured["clean_percent"][task] == pytest.approx(value, abs=task_tolerance), task
    for flow, entry in recorded["routes"]["flows"].items():
        for key in ("drop_inside", "drop_outside"):
            if key in entry:
                assert measured["flows"][flow][key] == pytest.approx(entry[key], abs=mean_tolerance), (flow, key)
    _xfail_if_the_record_misses(recorded, "routes")


@pytest.mark.slow
def test_shipped_pathway_organism_table_e_derives_the_recorded_layers(recorded, tmp_path):
    from mapflow.organism.verify import measure_table_e

    measured = measure_table_e(_verification(recorded, tmp_path))
    for flow, entry in recorded["table_e"].items():
        assert measured[flow]["derived"] == entry["derived"], flow  # exact
    _xfail_if_the_record_misses(recorded, "table_e")


@pytest.mark.slow
def test_shipped_pathway_organism_effective_pathway(recorded, tmp_path):
    """Opens the recorded Table E layers (the test above holds the sweep to them exactly), so this part needs no
    sweep of its own; `mapflow organism verify` derives the same layers from its sweep store."""
    from mapflow.organism.verify import layers_from_table_e, measure_pathway

    # the control at the released scripts' share is reported only, not a target: not re-measured here
    measured = measure_pathway(
        _verification(recorded, tmp_path), layers_from_table_e(recorded["table_e"]), at_paper_ratio=False
    )
    _, mean_tolerance = _flip_tolerances(recorded)
    assert measured["open_layers"] == recorded["effective_pathway"]["open_layers"]
    for condition, value in recorded["effective_pathway"]["accuracy_percent"].items():
        assert measured["accuracy_percent"][condition] == pytest.approx(value, abs=mean_tolerance), condition
    _xfail_if_the_record_misses(recorded, "effective_pathway")


@pytest.mark.slow
def test_shipped_pathway_organism_logit_lens(recorded, tmp_path):
    from mapflow.organism.verify import measure_lens

    measured = measure_lens(_verification(recorded, tmp_path))
    assert measured["ok"] == recorded["logit_lens"]["ok"]  # the keyword peaks: exact
    _xfail_if_the_record_misses(recorded, "logit_lens")
