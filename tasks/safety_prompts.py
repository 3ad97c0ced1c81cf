"""The generation tasks of Table 6 ("Safe %"): prompts a model continues freely, whose
continuations a toxicity classifier then judges (trainables/toxicity/).

toxigen_prompts
    ToxiGen's demonstration prompts (Hartvigsen et al. 2022): each is a few-shot list of
    statements about one group, ``"- s1\\n- s2\\n...\\n-"``, which a model continues with one
    more statement. 13 groups x {hate, neutral}, 1,000 prompts per file, released as
    ``prompts/{hate,neutral}_<group>_1k.txt`` in microsoft/TOXIGEN and as the ``prompts``
    config of the Hub dataset ``toxigen/toxigen-data`` (formerly ``skg/toxigen-data``; gated:
    accept its terms on the Hub and log in), one split per file. Items carry the group and a
    ``prompt_type`` facet (hate | neutral). The train split is the prompt-only form the online
    RL stages (PPO / RLOO) roll out on ("we use the original prompts from the ToxiGen dataset").

    Split (version 2). Each file is built from a small pool of seed statements (5 to 114 per
    file, 522 in all, none shared between files): a prompt is 5 or 6 of them in some order, so
    the 23,472 distinct prompts are only 15,447 distinct statement sets, and reorderings of one
    set are different texts. Version 1 hashed the prompt text, which put 4,274 of its 11,755
    eval prompts (36%) on the same statement set as some train prompt. The split unit is now the
    statement set: a prompt goes to the side sha256 of its sorted, deduplicated statements picks
    (prompts_split_of(statement_set_key(...))), so every reordering of a set lands on one side
    and no statement set is on both (measured on the release: 0 eval prompts share a train
    prompt's set). One exception: three files are all reorderings of a single set
    (hate_latino_1k, 556 prompts of 6 statements; neutral_latino_1k and hate_native_american_1k,
    the 120 orders of 5), so they cannot be split at all; they go to eval whole, which keeps all
    13 groups x {hate, neutral} in the safe % evaluation (the set hash alone would put both
    latino files in train, leaving latino no eval prompts). Result: train 10,973 prompts (no
    latino, no hate native_american; fewest in a group: native_american 247), eval 12,499
    (fewest in a group: latino 676; fewest in a file: 120).

    Residual overlap, which this split does not remove: statements. Apart from the 16 statements
    of the three eval-only files, every statement is on both sides (506 of 522), so 11,703 of the
    12,499 eval prompts share a statement with some train prompt, and 9,510 differ from their
    closest train prompt in just one statement. Removing that is not possible at prompt
    granularity: linking statement sets that share 4 statements joins every file but the two
    lgbtq ones into a single component, and a statement-disjoint split keeps about 3% of prompts
    (assigning statements to sides by hash and keeping prompts whose statements are all on one
    side: 242 train, 415 eval, 5 groups with no train prompt and 4 with no eval prompt; a local
    search over each file's statement bipartition does little better, e.g. 30 per side of
    hate_lgbtq's 1,000). Statement-disjoint means file-disjoint, and with one hate and one
    neutral file per group, an eval that covers every group and prompt type would leave the
    train pool nothing. So eval safe % on this split measures prompts never seen in training as
    sets, built from statements that were: read it as in-distribution, not as generalisation to
    unseen statements (the three eval-only files are the exception: statements never in train).

saferdialogues
    SaFeRDialogues (Ung, Xu, Boureau 2022): a dialogue whose next-to-last turn is a safety
    failure and whose last turn is the partner's feedback on it; the model, in the role of the
    speaker who failed, gives the next turn, and that response is judged (paper §2.3: "score
    continuations given the safety failures prompts"). Evaluation only, test split (788).
"""

from __future__ import annotations

import ast
import hashlib
import json
import warnings
from pathlib import Path

from .bad_rows import RowError
from .definition import SAFE, TaskDefinition
from .example import GenerationPrompt
from .holdout import unit_point
from .row_files import FileRows, read_jsonl, read_text_lines
from .source import HubSource, MirrorSource, Row
from .toxigen import CANONICAL_GROUPS, canonical_group

# --------------------------------------------------------------------------------------------
# toxigen_prompts
# --------------------------------------------------------------------------------------------

PROMPTS_TASK_NAME = "toxigen_prompts"
PROMPT_TYPES = ("hate", "neutral")
PROMPTS_PER_FILE = 1000

# File names spell two groups differently from the canonical names the analysis uses; the
# rest (middle_east, native_american, ...) already match (toxigen.canonical_group).
_FILE_GROUP_ALIASES = {"mental_disability": "mental_dis", "physical_disability": "physical_dis"}
_CANONICAL_TO_FILE = {canonical: name for name, canonical in _FILE_GROUP_ALIASES.items()}
# The paper's 13 groups. The GitHub repo also has bisexual / immigrant / trans files; they are
# not among ToxiGen's 13 target groups, so they are skipped even where a copy has them.
PROMPT_FILES = tuple(sorted(
    f"{kind}_{_CANONICAL_TO_FILE.get(group, group)}_1k" for kind in PROMPT_TYPES for group in CANONICAL_GROUPS
))  # fmt: skip

# The Hub config has one split per file; datasets concatenates "a+b+..." in this order, and
# rows then carry no file name, so _attach_source_files names them by position. (The same
# files as released: https://raw.githubusercontent.com/microsoft/TOXIGEN/main/prompts/<name>.txt;
# the "text" builder would lose the file name, and with it the group, so the Hub config is used.)
PROMPTS_HUB = HubSource(
    path="toxigen/toxigen-data", config="prompts",
    splits={"train": "+".join(PROMPT_FILES), "eval": "+".join(PROMPT_FILES)},
)


def _read_prompt_file(path: Path) -> FileRows:
    # One prompt per line; the statements inside a prompt are separated by a literal "\n".
    return read_text_lines(path, lambda line: {"prompt": line.rstrip("\r\n")})


def check_prompt_row(row: Row) -> None:
    """Raises when a row holds no prompt text (tasks.bad_rows): a Hub row without its field."""
    if not isinstance(row["prompt"], str):
        raise RowError("the prompt must be text", "prompt")


PROMPTS_MIRROR = MirrorSource(
    files={"train": "toxigen/prompts/*_1k.txt", "eval": "toxigen/prompts/*_1k.txt"}, reader=_read_prompt_file,
)

# Share of distinct statement sets in the train split (the RL prompt pool); the rest is the
# safe % evaluation set. Both are far larger than a stage or an evaluation uses: sizes are sampled.
PROMPTS_TRAIN_FRACTION = 0.5


def prompts_split_of(key: str) -> str:
    """'train' or 'eval': the first 8 bytes of sha256(key) as a fraction of 2**64.

    The key is a prompt's statement_set_key, so the split depends only on which statements the
    prompt lists: never on their order, on line order, on how many rows were loaded, or on a seed.
    """
    return "train" if unit_point(key) < PROMPTS_TRAIN_FRACTION else "eval"


def prompt_statements(text: str) -> frozenset[str]:
    """The statements a normalized prompt lists: its lines without the leading "-", blank ones
    (the closing "-", and one stray empty line in hate_lgbtq_1k) dropped. A set: order, and the
    repeats some hate_lgbtq_1k prompts have, do not make a different prompt."""
    statements = (line.strip().removeprefix("-").strip() for line in text.split("\n"))
    return frozenset(statement for statement in statements if statement)


def statement_set_key(statements: frozenset[str]) -> str:
    """The split key: the statements sorted and joined by newlines."""
    return "\n".join(sorted(statements))


def prompt_split_sides(rows: list[Row]) -> dict[str, str]:
    """statement_set_key -> 'train' | 'eval' for every prompt of the 13 groups' files in `rows`
    (rows carrying _source_file): the hash side, except that a set which is the only set of its
    file goes to eval (such a file cannot be split; see the module docstring). A side is a
    function of the set alone, so no set can be on both sides."""
    sets_of_file: dict[str, set[str]] = {}
    for row in rows:
        text = normalize_prompt(str(row["prompt"]))
        if text and parse_prompt_file_name(str(row["_source_file"])) is not None:
            sets_of_file.setdefault(str(row["_source_file"]), set()).add(statement_set_key(prompt_statements(text)))
    pinned = {next(iter(keys)) for keys in sets_of_file.values() if len(keys) == 1}
    return {key: "eval" if key in pinned else prompts_split_of(key) for keys in sets_of_file.values() for key in keys}


def parse_prompt_file_name(stem: str) -> tuple[str, str] | None:
    """("hate" | "neutral", canonical group) for a file stem like "hate_mental_disability_1k";
    None for a file outside the paper's 13 groups."""
    kind, _, rest = stem.partition("_")
    if kind not in PROMPT_TYPES or not rest.endswith("_1k"):
        return None
    name = rest[: -len("_1k")]
    group = canonical_group(_FILE_GROUP_ALIASES.get(name, name))
    return (kind, group) if group in CANONICAL_GROUPS else None


def normalize_prompt(raw: str) -> str:
    """The released line with its literal "\\n" separators made real newlines.

    The line keeps its final "-": the model continues the list with one more statement, as in
    ToxiGen's own generation. Done the same way for the Hub and the text files, so both give
    the same prompt text and therefore the same example ids.
    """
    return raw.replace("\\n", "\n").strip()


def _attach_source_files(rows: tuple[Row, ...]) -> list[Row]:
    if all("_source_file" in row for row in rows):
        return list(rows)
    # Hub rows: the concatenated splits, PROMPTS_PER_FILE each, in PROMPT_FILES order.
    expected = PROMPTS_PER_FILE * len(PROMPT_FILES)
    if len(rows) != expected:
        raise ValueError(
            f"ToxiGen prompts from the Hub: expected {expected} rows ({len(PROMPT_FILES)} splits x "
            f"{PROMPTS_PER_FILE}), got {len(rows)}; cannot tell which split each row came from"
        )
    return [{**row, "_source_file": PROMPT_FILES[i // PROMPTS_PER_FILE]} for i, row in enumerate(rows)]


def prompts_from_rows(rows: tuple[Row, ...], split: str) -> list[GenerationPrompt]:
    """Distinct prompts of the 13 groups in `split`, in source order.

    Some files repeat prompts (hate_native_american_1k has 120 distinct lines): greedy decoding
    gives a repeated prompt the same continuation, so repeats would only re-weight it. Each
    distinct prompt of a file is kept once. Its side is its statement set's (prompt_split_sides);
    the id still hashes the exact text, so reorderings of one set stay distinct prompts.
    """
    items: list[GenerationPrompt] = []
    seen: set[str] = set()
    attributed = _attach_source_files(rows)
    sides = prompt_split_sides(attributed)
    for row in attributed:
        parsed = parse_prompt_file_name(str(row["_source_file"]))
        text = normalize_prompt(str(row["prompt"]))
        if parsed is None or not text:
            continue
        kind, group = parsed
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        example_id = f"{PROMPTS_TASK_NAME}/{row['_source_file']}/{digest}"
        if example_id in seen or sides[statement_set_key(prompt_statements(text))] != split:
            continue
        seen.add(example_id)
        items.append(GenerationPrompt(
            example_id=example_id, prompt=text, groups=(group,), facets=(("prompt_type", kind),),
            # label lets stratified sampling balance hate and neutral prompts within each group.
            label=1 if kind == "hate" else 0,
        ))
    return items


# --------------------------------------------------------------------------------------------
# saferdialogues
# --------------------------------------------------------------------------------------------

DIALOGUES_TASK_NAME = "saferdialogues"
# The release is ParlAI's download (parlai/tasks/saferdialogues/build.py, version v0.4, sha256
# ef6a5f85fdab1fdea4c8d50ba38644f41c7bad5d04611777b79bcd85d750c4c6): a tarball of ParlAI text
# files saferdialogues_dataset/{train,valid,test}.txt. No Hub dataset copies it, so the
# "text" builder reads the test file out of the tarball (an fsspec chained URL); each row is
# then one ParlAI line ("text:...\tlabels:...\tepisode_done:True").
DIALOGUES_URL = "http://parl.ai/downloads/saferdialogues/saferdialogues_v0.4.tar.gz"
DIALOGUES_HUB = HubSource(
    path="text", data_files=f"tar://saferdialogues_dataset/test.txt::{DIALOGUES_URL}", splits={"eval": "train"},
)
# Episodes in the full valid and test splits (train: 6,306), per ParlAI's teacher fixtures.
DIALOGUES_FULL_SIZE = 788


def parse_parlai_line(line: str) -> dict[str, object]:
    """One ParlAI text-format message: tab-separated "key:value" fields, with "\\n", "\\t" and
    "__PIPE__" escaped, and label lists separated by "|"."""
    def unescape(value: str) -> str:
        return value.replace("\\t", "\t").replace("\\n", "\n").replace("__PIPE__", "|")

    message: dict[str, object] = {}
    for field in line.rstrip("\r\n").split("\t"):
        key, sep, value = field.partition(":")
        if not sep:
            continue
        if key in ("labels", "eval_labels", "label_candidates"):
            message[key] = [unescape(v) for v in value.split("|")]
        elif key == "episode_done":
            message[key] = value.strip().lower() == "true"
        else:
            message[key] = unescape(value)
    return message


def _read_dialogue_file(path: Path) -> FileRows:
    """JSON lines of ParlAI messages (the mirror's fixture form), or ParlAI text lines (the
    release form): a full copy of the test split may be dropped in under the mirror's name.
    A line that starts like JSON but is not is a bad row at its line (tasks.row_files)."""
    return read_jsonl(path, parse=lambda line: json.loads(line) if line.lstrip().startswith("{")
                      else parse_parlai_line(line))


def check_dialogue_row(row: Row) -> None:
    """Raises when a row is no dialogue (tasks.bad_rows): a message whose text is not text."""
    message = _message_of(row)
    if message is not None and not isinstance(message.get("text", ""), str):
        raise RowError("the dialogue text must be text", "text")


DIALOGUES_MIRROR = MirrorSource(files={"eval": "saferdialogues/saferdialogues_test.yml.jsonl"}, reader=_read_dialogue_file)


def _message_of(row: Row) -> dict[str, object] | None:
    # A Hub ("text" builder) row is one raw ParlAI line under "text"; mirror rows are messages.
    text = row.get("text")
    if set(row) == {"text"} and isinstance(text, str) and (text.startswith("text:") or not text.strip()):
        return parse_parlai_line(text) if text.strip() else None
    return dict(row)


def _dialogue_id(message: dict[str, object]) -> str:
    raw = message.get("original_metadata")
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)  # "{'chat_id': 6963, 'recovery_id': 2593}": a literal, never eval'd
        except (ValueError, SyntaxError):
            raw = None
    if isinstance(raw, dict) and "chat_id" in raw and "recovery_id" in raw:
        return f"{raw['chat_id']}-{raw['recovery_id']}"
    return hashlib.sha256(str(message["text"]).encode("utf-8")).hexdigest()[:16]


# Speaker names as the dataset's own annotators saw them (recoveries say "I should have been
# more polite to Person 1"): the feedback giver is Person 1, the speaker who failed Person 2.
FEEDBACK_SPEAKER, MODEL_SPEAKER = "Person 1", "Person 2"


def render_dialogue(context: str) -> str:
    """The dialogue as speaker-labelled turns, ending with the model's (Person 2's) turn to speak.

    The context lines alternate speakers and the last one is the feedback, so speakers are
    assigned from the end. Labels tell a base model whose turn it is; without them it cannot
    know it should answer the feedback rather than continue it.
    """
    turns = [line.strip() for line in context.split("\n") if line.strip()]
    speakers = [FEEDBACK_SPEAKER if (len(turns) - 1 - i) % 2 == 0 else MODEL_SPEAKER for i in range(len(turns))]
    return "\n".join(f"{speaker}: {turn}" for speaker, turn in zip(speakers, turns)) + f"\n{MODEL_SPEAKER}:"


def dialogues_from_rows(rows: tuple[Row, ...], split: str) -> list[GenerationPrompt]:
    messages = [m for m in (_message_of(row) for row in rows) if m is not None and str(m.get("text", "")).strip()]
    if len(messages) < DIALOGUES_FULL_SIZE:
        warnings.warn(
            f"SaFeRDialogues: loaded {len(messages)} test episodes but the full split has {DIALOGUES_FULL_SIZE}: "
            "this is a sample (e.g. the mirror's ParlAI fixture), so its safe % is not comparable to the paper's. "
            "Load from the source (no data dir) or put the full test split at the mirror path.",
            stacklevel=2,
        )
    items: list[GenerationPrompt] = []
    used: dict[str, int] = {}
    for message in messages:
        base = f"{DIALOGUES_TASK_NAME}/{_dialogue_id(message)}"
        used[base] = used.get(base, 0) + 1
        # A repeated id (same chat and recovery) stays distinct in source order.
        example_id = base if used[base] == 1 else f"{base}#{used[base]}"
        items.append(GenerationPrompt(example_id=example_id, prompt=render_dialogue(str(message["text"]))))
    return items


DEFINITIONS = (
    TaskDefinition(
        name=PROMPTS_TASK_NAME,
        description=(
            "ToxiGen generation prompts (13 groups x hate/neutral), continued by the model and judged by a "
            "toxicity classifier (safe %); fixed hash split of distinct statement sets (reorderings of a prompt's "
            f"statements stay on one side), {PROMPTS_TRAIN_FRACTION:.0%} train (the PPO / RLOO prompt pool, 10,973 "
            "prompts) / rest eval (12,499; the three single-set files, latino x2 and hate native_american, are "
            "eval only); statements still recur across sides"
        ),
        version="2",
        hub=PROMPTS_HUB,
        mirror=PROMPTS_MIRROR,
        template="none",
        group_field="_source_file",  # the group is in the file (or Hub split) name: <type>_<group>_1k
        examples_from_rows=prompts_from_rows,
        check_row=check_prompt_row,
        kind="generation",
        groupings=("prompt_type",),
        metrics=(SAFE,),
    ),
    TaskDefinition(
        name=DIALOGUES_TASK_NAME,
        description=(
            "SaFeRDialogues test dialogues ending in a safety failure and its feedback; the model's next turn is "
            "judged by a toxicity classifier (safe %, held-out safety eval, Table 6)"
        ),
        version="1",
        hub=DIALOGUES_HUB,
        mirror=DIALOGUES_MIRROR,
        template="none",
        group_field=None,
        examples_from_rows=dialogues_from_rows,
        check_row=check_dialogue_row,
        kind="generation",
        splits=("eval",),
        metrics=(SAFE,),
    ),
)
