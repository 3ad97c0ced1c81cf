"""The tokenization preflight: `study validate --show-tokens` shows what the model will see, and
`study run` stops with exit code 2 before anything trains when answers cannot be scored as trained."""

from __future__ import annotations

import dataclasses

import pytest

from study.cli import main


def _watch_cluster(monkeypatch) -> list:
    """Calls of study.cluster.connect (how `study run` reaches Ray), recorded instead of made."""
    import study.cluster

    calls: list = []
    monkeypatch.setattr(study.cluster, "connect", lambda *a, **k: calls.append((a, k)))
    return calls


def test_show_tokens_prints_each_task_as_the_model_reads_it(capsys, data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["validate", "demo", "--show-tokens"]) == 0
    out, err = capsys.readouterr()
    assert "study:" not in err  # (stderr has the tiny model build's progress bars)
    assert "prompt format: plain text (model.chat_template: auto)" in out
    assert "BOS added: none" in out  # the tiny tokenizer adds no BOS
    for task in ("toxigen_qa", "arc_easy"):
        assert f"task {task} (train, eval):" in out
    # ToxiGenQA's two options and the tokens SFT trains on, as token strings.
    assert "'not toxic'    ['Ġnot', 'Ġtoxic', '.']" in out
    assert "training loss on: ['ĠThis', 'Ġis', 'Ġ" in out
    assert "'A'            ['ĠA', '.']" in out
    assert "warnings:" not in out  # byte-level BPE encodes options alike alone and in context


def test_chat_template_true_on_the_tiny_model_is_a_validation_problem(capsys):
    assert main(["validate", "demo", "--set", "model.chat_template=true"]) == 2
    _, err = capsys.readouterr()
    # reported as the --set argument that wrote the value
    assert "--set model.chat_template=true: the built-in tiny model has no chat template (use auto or false)" in err


def test_chat_template_without_a_template_is_exit_2_before_anything_runs(capsys, family_model_path, tmp_path,
                                                                         monkeypatch):
    """A model whose tokenizer has no template (the Qwen2-like base family) asked to use one."""
    connected = _watch_cluster(monkeypatch)
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    path = family_model_path("bosless")
    args = ["--set", f"model.name={path}", "--set", "model.chat_template=true"]
    assert main(["validate", "demo", "--show-tokens", *args]) == 2
    _, err = capsys.readouterr()
    assert "study: tokenization: the study cannot be scored as trained:" in err
    assert f"model.chat_template is true, but the tokenizer of {path} has no chat template" in err

    assert main(["run", "demo", "--storage", str(tmp_path / "results"), *args]) == 2
    _, err = capsys.readouterr()
    assert "has no chat template" in err
    assert connected == []  # stopped before the cluster
    assert not (tmp_path / "results" / "demo" / "study.yaml").exists()


def test_a_context_longer_than_max_length_for_every_example_is_exit_2(capsys, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["validate", "demo", "--show-tokens", "--set", "model.max_length=16"]) == 2
    _, err = capsys.readouterr()
    assert "task toxigen_qa: the context before the answer is at least max_length=16 tokens for every one" in err
    assert "raise model.max_length" in err


def test_over_length_share_and_alone_encodings_are_warned(family_model_path, data_dir):
    """On Llama-2's legacy tokenizer the preflight names the options that encode differently on
    their own (the lone '▁'), and counts examples over max_length once they pass 2%."""
    from study.spec_loading import load_spec_file
    from study.presets import resolve_study_file
    from trainables.token_preflight import preflight

    path = family_model_path("sentencepiece_legacy")
    spec = load_spec_file(resolve_study_file("demo"), [f"model.name={path}"])
    report = preflight(spec, str(path), str(data_dir))
    assert report.errors == []
    assert any("option ' A.' encodes as ['▁', '▁A', '.'] on its own but as ['▁A', '.'] after the context" in w
               for w in report.warnings), report.warnings
    # Counted by hand: each ARC example's longest option sequence, cut so that ~10% are over.
    from trainables.token_preflight import study_examples
    from trainables.tokenization import AnswerEncoder
    from trainables.models import load_tokenizer

    _, examples, _ = study_examples(spec, str(data_dir))["arc_easy"]
    encoder = AnswerEncoder(load_tokenizer(str(path)))
    lengths = sorted(max(len(e.ids) for e in per) for per in encoder.encode(examples))
    limit = lengths[int(0.9 * len(lengths))]
    expected = sum(n > limit for n in lengths)
    short = dataclasses.replace(spec, model=dataclasses.replace(spec.model, max_length=limit))
    report = preflight(short, str(path), str(data_dir))
    assert f"task arc_easy: {expected} of {len(examples)} examples are longer than max_length={limit} tokens" in \
        "\n".join(report.warnings)
    assert 0.05 * len(examples) < expected < 0.15 * len(examples)


def test_an_empty_option_is_named_with_task_example_and_option(tiny_model_path):
    from trainables.models import load_tokenizer
    from tasks import Example
    from trainables.token_preflight import inspect_task
    from trainables.tokenization import AnswerEncoder

    encoder = AnswerEncoder(load_tokenizer(str(tiny_model_path)))
    good = Example(example_id="quiz/1", prompt="Q?\nAnswer:", answer_prefix="", options=(" yes", " no"),
                   option_names=("yes", "no"), label=0)
    bad = dataclasses.replace(good, example_id="quiz/2", options=(" yes", ""))
    facts = inspect_task(encoder, "quiz", ["eval"], [good, bad, good], max_length=64)
    assert len(facts.errors) == 1
    assert facts.errors[0].startswith("task quiz: quiz/2, option 'no' (''): the option has no tokens")


def test_a_chat_model_passes_the_conversational_check_and_a_broken_template_fails_it(family_model_path, data_dir):
    """The chat family: TRL's rendering equals the seam's (no error). A template that adds a
    system turn only when the conversation has an answer breaks 'generation prompt + answer'."""
    from trainables.models import load_tokenizer
    from tasks import load_examples
    from trainables.token_preflight import inspect_task
    from trainables.tokenization import AnswerEncoder

    tokenizer = load_tokenizer(str(family_model_path("chat")))
    examples = load_examples("arc_easy", "eval", data_dir=data_dir, limit=5)
    facts = inspect_task(AnswerEncoder(tokenizer, chat=True), "arc_easy", ["eval"], examples, max_length=512)
    assert facts.errors == []
    assert facts.shown[1].startswith("  model reads: '<|im_start|>user\\nInstructions:")
    tokenizer.chat_template = ("{% if messages|length > 1 %}<|im_start|>system\\nok<|im_end|>\\n{% endif %}"
                               + tokenizer.chat_template)
    facts = inspect_task(AnswerEncoder(tokenizer, chat=True), "arc_easy", ["eval"], examples, max_length=512)
    assert len(facts.errors) == len(examples)  # every example named (5 <= the per-task cap)
    assert f"task arc_easy: {examples[0].example_id}: the chat template does not render the assistant turn" in \
        facts.errors[0]


def test_a_template_whose_prompt_ends_in_a_space_fails_trl_s_conversational_check(family_model_path, data_dir,
                                                                                   tmp_path):
    """Generation prompt '<|im_start|>assistant ' (a trailing space): TRL tokenizes the prompt on its
    own ('Ġ' last) and puts the loss after it, while in the conversation the space belongs to 'ĠThe'.
    The preflight names the example; the SFT stage refuses to train on it too."""
    from trainables.models import load_model_and_tokenizer
    from tests.plans import stage_plan, training_plan
    from trainables.stages.sft import build_sft_trainer
    from tasks import load_examples
    from trainables.token_preflight import inspect_task
    from contract.problems import TokenizationError
    from trainables.tokenization import AnswerEncoder

    model, tokenizer = load_model_and_tokenizer(str(family_model_path("chat")), dtype="float32")
    tokenizer.chat_template = tokenizer.chat_template.replace("'\\n' + message['content']",
                                                              "(' ' if message['role'] == 'assistant' else '\\n') "
                                                              "+ message['content']")
    tokenizer.chat_template = tokenizer.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant '")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True).endswith("<|im_start|>assistant ")
    examples = load_examples("arc_easy", "eval", data_dir=data_dir, limit=3)
    encoder = AnswerEncoder(tokenizer, chat=True)
    facts = inspect_task(encoder, "arc_easy", ["eval"], examples, max_length=512)
    assert facts.errors == [f"task arc_easy: {examples[0].example_id}: TRL's conversational tokenization of the chat "
                            f"template differs from the scoring seam" + facts.errors[0].split("seam", 1)[1]]
    stage = {"method": "sft", "learning_rate": 1e-3, "batch_size": 2, "steps": 1, "seed": 0}
    training = {"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                "warmup_steps": 0, "max_grad_norm": 1.0}
    with pytest.raises(TokenizationError, match=f"{examples[0].example_id}: TRL tokenized the training example"):
        build_sft_trainer(model=model, tokenizer=encoder, stage=stage_plan(stage), examples=examples,
                          training=training_plan(training), max_length=512, model_dtype="auto",
                          work_dir=str(tmp_path / "work"))


def test_a_model_without_a_tokenizer_is_exit_2_before_ray(capsys, tmp_path, monkeypatch):
    connected = _watch_cluster(monkeypatch)
    (tmp_path / "no-tokenizer").mkdir()
    args = ["--set", f"model.name={tmp_path / 'no-tokenizer'}"]
    assert main(["run", "demo", "--storage", str(tmp_path / "results"), *args]) == 2
    _, err = capsys.readouterr()
    assert f"cannot load the tokenizer of {tmp_path / 'no-tokenizer'}" in err
    assert connected == []


def test_a_training_task_whose_every_example_is_too_long_is_an_error(tiny_model_path):
    """Contexts that fit but whole training sequences that do not: training would drop all of them."""
    from trainables.models import load_tokenizer
    from tasks import Example
    from trainables.token_preflight import inspect_task
    from trainables.tokenization import AnswerEncoder

    encoder = AnswerEncoder(load_tokenizer(str(tiny_model_path)))
    ex = Example(example_id="quiz/1", prompt="Question: pick one.\nAnswer:", answer_prefix=" The best answer is",
                 options=(" A.", " B."), option_names=("A", "B"), label=0)
    [per] = encoder.encode([ex])
    limit = len(per[0].ids) - 1  # one token short for training; the context alone fits
    assert len(per[0].context_ids) < limit
    facts = inspect_task(encoder, "quiz", ["train"], [ex], max_length=limit, n_train=1)
    assert facts.errors == [f"task quiz: no training example fits in max_length={limit} tokens (shortest training "
                            f"sequence: {limit + 1}); raise model.max_length"]
    assert inspect_task(encoder, "quiz", ["eval"], [ex], max_length=limit).errors == []  # evaluation cuts, fine
