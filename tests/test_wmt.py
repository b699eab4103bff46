"""WMT Transformer: facts, parameter counts, loss, decoding, beam search, BLEU, train and eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.wmt import workload as wmt
from workloads.wmt.beam_search import beam_search, length_penalty
from workloads.wmt.torch_workload import Transformer

EXPECTED = {
    "wmt": 133_521_408,
    "wmt_post_ln": 133_517_312,
    "wmt_attention_temp": 133_521_408,
    "wmt_glu_tanh": 146_116_608,
}
TINY = {"vocab_size": 40, "d_model": 16, "nhead": 2, "d_hid": 16, "nlayers": 2}


def tiny_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ntoken=13, d_model=8, nhead=2, d_hid=8, nlayers=2, **kw).eval()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_the_reference(name):
    with torch.device("meta"):
        model = registry.load(name, data="synthetic").build_model()
    assert (
        sum(p.numel() for p in model.parameters())
        == EXPECTED[name]
        == registry.get(name).n_params["pytorch"]
    )


def test_facts_of_the_workload_and_variants():
    base = registry.get("wmt")
    assert (base.validation_target, base.test_target) == (30.8491, 30.7219)
    assert (base.max_allowed_runtime_sec, base.step_hint, base.eval_period_time_sec) == (
        43_336,
        120_000,
        840,
    )
    assert (base.num_train_examples, base.num_validation_examples, base.num_test_examples) == (
        5_906_184,
        3_000,
        3_003,
    )
    assert base.num_eval_train_examples == math.ceil(3_000 / 128) * 128
    assert (base.eval_batch_size, base.target_metric_name, base.higher_is_better) == (
        128,
        "bleu",
        True,
    )
    assert base.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY and base.default_dropout == 0.1
    options = {n: registry.get(n).model_options for n in EXPECTED}
    assert options["wmt_post_ln"]["pre_ln"] is False
    assert options["wmt_attention_temp"]["attention_temp"] == 4.0
    assert (options["wmt_glu_tanh"]["glu"], options["wmt_glu_tanh"]["activation"]) == (True, "tanh")
    for name in EXPECTED:
        info = registry.get(name)
        assert (
            info.step_hint == base.step_hint
            and info.max_allowed_runtime_sec == base.max_allowed_runtime_sec
        )


def test_parameter_names_and_shapes_follow_the_reference_tree():
    with torch.device("meta"):
        model = registry.load("wmt_glu_tanh", data="synthetic").build_model()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["shared_embedding.weight"] == (32_000, 1024)
    assert shapes["encoder.encoder.layers.5.self_attn.in_proj.weight"] == (3072, 1024)
    assert shapes["decoder.decoder.layers.0.multihead_attn.kv_proj.weight"] == (2048, 1024)
    assert shapes["encoder.encoder.layers.0.linear_glu.weight"] == (1024, 1024)
    assert shapes["decoder.decoder.layers.0.linear_glu.weight"] == (1024, 1024)
    assert "decoder.decoder.norm.weight" in shapes
    assert not any("bias" in n and "attn" in n for n in shapes)  # attention has no biases
    workload = registry.load("wmt", data="synthetic")
    assert workload.is_output_params("shared_embedding.weight")


def test_initialisation_scheme():
    model = Transformer(ntoken=50, d_model=64, nhead=4, d_hid=64, nlayers=1)
    w = model.encoder.encoder.layers[0].self_attn.in_proj.weight
    bound = math.sqrt(6.0 / (64 + 192))  # Xavier-uniform on the fused (192, 64) projection
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert model.encoder.encoder.layers[0].linear1.bias.abs().max() < 1e-5  # N(0, 1e-6)
    assert 0.8 < model.shared_embedding.weight.std() < 1.2  # PyTorch's N(0, 1)


def test_positional_table_is_the_references():
    model = Transformer(ntoken=10, d_model=8, nhead=2, d_hid=8, nlayers=1)
    pe = model.pos_encoder.pe[0].numpy()
    pos, i = 5, 2
    rate = math.exp(-math.log(10000.0) * i / (4 - 1))
    assert pe[pos, i] == pytest.approx(math.sin(pos * rate), abs=1e-6)
    assert pe[pos, 4 + i] == pytest.approx(math.cos(pos * rate), abs=1e-6)


def test_loss_is_per_token_label_smoothed_cross_entropy_over_real_tokens():
    workload = registry.load("wmt", data="synthetic")
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    targets = torch.tensor([[3, 2, 0], [4, 0, 0]])
    out = workload.loss_fn(targets, logits, (targets > 0).float(), label_smoothing=0.1)
    logp = logits.log_softmax(-1).numpy()
    expected = 0.0
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        smoothed = np.full(5, 0.1 / 5)
        smoothed[targets[b, t]] += 0.9
        expected -= (smoothed * logp[b, t]).sum()
    assert out["summed"].item() == pytest.approx(expected)
    assert out["n_valid_examples"].item() == 3
    assert out["per_example"].shape == (2, 3) and out["per_example"][0, 2] == 0
    # Without a mask the reference counts every position, padding included.
    assert workload.loss_fn(targets, logits)["n_valid_examples"].item() == 6
    weights = (targets > 0).float()
    weights[1, 0] = 0
    masked = workload.loss_fn(targets, logits, weights, 0.0)
    assert masked["n_valid_examples"].item() == 2
    assert masked["summed"].item() == pytest.approx(-(logp[0, 0, 3] + logp[0, 1, 2]))


def test_bleu_equals_sacrebleu_corpus_score():
    hyps = ["the cat sat on the mat", "a quick brown fox", "hello world"]
    refs = ["the cat sat on a mat", "the quick brown fox jumps", "hello world"]
    assert wmt.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert wmt.bleu(refs, refs) == pytest.approx(100.0)


def test_decoded_tokens_stop_at_eos_like_the_references():
    assert wmt.truncate_at_eos([5, 6, 2, 2, 2]).tolist() == [5, 6, 2]
    assert wmt.truncate_at_eos([5, 6, 7]).tolist() == [5]  # no </s>: the reference keeps one token


def test_length_penalty_is_wu_et_al():
    assert length_penalty(7, 0.6) == pytest.approx(2.0**0.6)


def test_beam_search_finds_the_best_sequence_greedy_misses():
    # Vocab 0..4, 2 = </s>. First token: 3 (0.6) or 4 (0.4). After 3 the mass spreads (</s> 0.3),
    # after 4 </s> has 0.9. Best: [4, </s>] (0.36); greedy starts with 3 and ends at 0.6 x 0.35 = 0.21.
    table = {
        (0,): {3: 0.6, 4: 0.4},
        (0, 3): {2: 0.3, 3: 0.35, 4: 0.35},
        (0, 4): {2: 0.9, 3: 0.05, 4: 0.05},
    }

    def probs(prefix: tuple) -> dict:
        return table.get(prefix, {2: 1.0})

    def step(prefixes: torch.Tensor, cache):
        out = torch.full((len(prefixes), 5), -1e9)
        for i, p in enumerate(prefixes.tolist()):
            for token, prob in probs(tuple(p)).items():
                out[i, token] = math.log(prob)
        return out, cache

    seqs, scores = beam_search(step, batch_size=1, max_decode_len=6, eos_id=2, beam_size=2)
    assert wmt.truncate_at_eos(seqs[0, 0, 1:].numpy()).tolist() == [4, 2]
    assert scores[0, 0].item() == pytest.approx(math.log(0.36) / length_penalty(2), rel=1e-5)
    greedy, p, prob = [0], (0,), 1.0
    while greedy[-1] != 2:
        token = max(probs(p), key=probs(p).get)
        prob *= probs(p)[token]
        greedy.append(token)
        p = tuple(greedy)
    assert greedy[1] == 3 and prob < 0.36


def test_cached_decoding_equals_teacher_forcing():
    model = tiny_model(glu=True, activation="tanh", attention_temp=4.0)
    src = torch.tensor([[5, 7, 9, 2, 0, 0]])
    tgt = torch.tensor([[4, 11, 6, 3, 2]])
    with torch.no_grad():
        forced = model(src, tgt, dropout_rate=0.0)[0]
        step = model.decode_fn(src, beam_size=1)
        prefix, cache = torch.zeros(1, 1, dtype=torch.long), None
        for t in range(tgt.shape[1]):
            logits, cache = step(prefix, cache)
            torch.testing.assert_close(logits[0], forced[t], rtol=1e-4, atol=1e-5)
            prefix = torch.cat([prefix, tgt[:, t : t + 1]], dim=1)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_translate_equals_beam_search_with_decoding_from_scratch(pre_ln):
    model = tiny_model(seed=3, pre_ln=pre_ln)
    src = torch.tensor([[5, 7, 9, 2, 0, 0, 0], [3, 4, 2, 0, 0, 0, 0], [6, 6, 8, 10, 12, 2, 0]])
    beams = 3

    def from_scratch(prefixes, cache):  # no cache carried over, so no beam reordering involved
        step, state = model.decode_fn(src[:, :6], beams), None
        for t in range(prefixes.shape[1]):
            logits, state = step(prefixes[:, : t + 1], state)
        return logits, None

    with torch.no_grad():
        expected, _ = beam_search(from_scratch, 3, 7, eos_id=2, beam_size=beams)
        got = model.translate(src, 7, beam_size=beams)
    assert torch.equal(got, expected[:, 0, 1:])


def test_dropout_rate_is_a_call_argument():
    model = tiny_model().train()
    src, tgt = torch.tensor([[5, 7, 2]]), torch.tensor([[4, 2]])
    torch.testing.assert_close(model(src, tgt, dropout_rate=0.0), model(src, tgt, dropout_rate=0.0))
    assert not torch.allclose(model(src, tgt, dropout_rate=0.5), model(src, tgt, dropout_rate=0.0))


def test_packed_rows_are_independent_sequences():
    model = tiny_model(seed=1)
    a_src, a_tgt = [5, 7, 2], [4, 6, 2]
    b_src, b_tgt = [9, 3, 8, 2], [11, 2]
    packed = {
        "src": torch.tensor([a_src + b_src + [0]]),
        "tgt": torch.tensor([a_tgt + b_tgt + [0, 0]]),
        "src_pos": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0]]),
        "tgt_pos": torch.tensor([[0, 1, 2, 0, 1, 0, 0]]),
        "src_seg": torch.tensor([[1, 1, 1, 2, 2, 2, 2, 0]]),
        "tgt_seg": torch.tensor([[1, 1, 1, 2, 2, 0, 0]]),
    }
    with torch.no_grad():
        out = model(
            packed["src"],
            packed["tgt"],
            packed["src_pos"],
            packed["tgt_pos"],
            packed["src_seg"],
            packed["tgt_seg"],
            dropout_rate=0.0,
        )
        alone = model(torch.tensor([a_src]), torch.tensor([a_tgt]), dropout_rate=0.0)
    # The first segment sees exactly what it would see alone (the reference shifts the whole row,
    # so the second segment's first input is the first segment's </s>, not the start token).
    torch.testing.assert_close(out[0, :3], alone[0], rtol=1e-4, atol=1e-5)


def test_tiny_forward_backward_and_eval_with_beam_search():
    workload = registry.load("wmt", data="synthetic", **TINY)
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 2))
    assert batch["inputs"].shape == (2, workload.max_length) and "targets_segmentation" in batch
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True, 0.1)
    assert logits.shape == (*batch["targets"].shape, TINY["vocab_size"])
    loss = workload.loss_fn(batch["targets"], logits, batch["weights"], label_smoothing=0.1)
    assert loss["n_valid_examples"].item() == (batch["targets"] > 0).sum().item()
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert model.shared_embedding.weight.grad.abs().sum() > 0
    metrics = workload.eval_model(128, model, None, None, None, None, 0)
    for split in ("train", "validation", "test"):
        assert (
            0.0 <= metrics[f"{split}/bleu"] <= 100.0 and 0.0 <= metrics[f"{split}/accuracy"] <= 1.0
        )
        assert metrics[f"{split}/loss"] > 0
    assert metrics["validation/num_examples"] == workload.num_validation_examples


@pytest.mark.slow
def test_full_size_train_step_at_batch_two():
    workload = registry.load("wmt", data="synthetic")
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 2))
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True, None)
    assert logits.shape == (*batch["targets"].shape, wmt.VOCAB_SIZE)
    loss = workload.loss_fn(batch["targets"], logits, batch["weights"], label_smoothing=0.1)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert torch.isfinite(model.shared_embedding.weight.grad).all()
