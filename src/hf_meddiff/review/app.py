"""The review app (Gradio Blocks): one case per screen, judgements saved to the `ReviewStore` on every "save".

Layout: the image with the model's boxes (red, numbered and labelled) and the boxes the reviewer drew (blue) on
the left; the question, the model's answer and rationale, the reference behind a toggle and the judgement form on
the right. A corrected box is drawn with two clicks on the image (opposite corners). Keyboard: `c` / `i` / `u`
answer correct / incorrect / unsure, `1`-`5` reasoning score, `g` every box correct, `r` show the reference,
`Enter` save and go to the next unreviewed case, `→` / `←` next / previous case (keys are ignored while typing
in a text field; there `Ctrl+Enter` saves).

State lives in the store and in each browser session's `gr.State`, never in module globals, so several
reviewers (logged in with `--auth`, or on separate servers over one database) do not share a position.
"""

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..constants import BOX_SCALE
from ..formatting import BOX_PATTERN
from .cases import ReviewCase, render_case
from .store import ANSWER_VERDICTS, BOX_VERDICTS, ReviewStore

__all__ = ["LOCAL_HOSTS", "MAX_BOXES", "SHORTCUTS_JS", "ReviewSession", "build_app", "launch_app"]

MAX_BOXES = 6
"""Model boxes per case with their own verdict control (more are drawn but not judged one by one)."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

SHORTCUTS_JS = """
<script>
(() => {
  const pick = (id, value) => {
    const input = document.querySelector(`#${id} input[type=radio][value="${value}"]`);
    if (input && !input.checked) input.click();
    return !!input;
  };
  const press = (id) => { const b = document.getElementById(id); if (b) b.click(); return !!b; };
  document.addEventListener("keydown", (event) => {
    const t = event.target;
    const typing = t && (t.tagName === "TEXTAREA" || t.isContentEditable ||
      (t.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(t.type)));
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { press("save-next"); event.preventDefault(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const k = event.key;
    let done = false;
    if (k === "c") done = pick("answer-verdict", "correct");
    else if (k === "i") done = pick("answer-verdict", "incorrect");
    else if (k === "u") done = pick("answer-verdict", "unsure");
    else if (["1", "2", "3", "4", "5"].includes(k)) done = pick("reasoning-score", k);
    else if (k === "g") {
      document.querySelectorAll("[id^=box-verdict-] input[type=radio][value=correct]").forEach(
        (input) => { if (input.offsetParent !== null && !input.checked) input.click(); });
      done = true;
    }
    else if (k === "r") { const box = document.querySelector("#show-reference input"); if (box) { box.click(); done = true; } }
    else if (k === "Enter") done = press("save-next");
    else if (k === "ArrowRight") done = press("next-case");
    else if (k === "ArrowLeft") done = press("prev-case");
    if (done) event.preventDefault();
  });
})();
</script>
"""
"""Keyboard shortcuts, injected into the page's head."""

SHORTCUTS_HELP = (
    "Keys: **c** / **i** / **u** answer correct / incorrect / unsure · **1-5** reasoning score · **g** every box "
    "correct · **r** show reference · **Enter** save and next · **→** / **←** next / previous · in a text field "
    "**Ctrl+Enter** saves. Draw a corrected box with two clicks on the image (opposite corners)."
)


@dataclass
class ReviewSession:
    """What the app serves: the cases of one model revision and the database their reviews go to.

    `reviewer` names the reviewer when nobody logs in (with `--auth` the login name is used).
    """

    store: ReviewStore
    cases: list[ReviewCase]
    model_revision: str
    reviewer: str = "reviewer"

    def __post_init__(self) -> None:
        if not self.cases:
            raise ValueError("No cases to review.")
        self.index = {case.case_id: i for i, case in enumerate(self.cases)}

    def first_unreviewed(self, reviewer: str, start: int = 0) -> int | None:
        """The first case at or after `start` (wrapping round) that `reviewer` has not judged."""
        done = self.store.reviewed_case_ids(self.model_revision, reviewer)
        n = len(self.cases)
        for step in range(n):
            i = (start + step) % n
            if self.cases[i].case_id not in done:
                return i
        return None


def _escape(text: str) -> str:
    return html.escape(text or "", quote=False)


def _rationale_markdown(case: ReviewCase) -> str:
    counter = iter(range(1, 10_000))
    text = BOX_PATTERN.sub(lambda _m: f"⟦box {next(counter)}⟧", case.model_rationale)
    return _escape(re.sub(r"\s+", " ", text).strip())


def _option_text(case: ReviewCase, letter: str) -> str:
    index = ord(letter.strip().upper()[:1] or "?") - ord("A")
    if len(letter.strip()) == 1 and 0 <= index < len(case.options):
        return f"{letter} ({case.options[index]})"
    return letter


def _question_markdown(case: ReviewCase) -> str:
    lines = [f"**Question** ({_escape(case.modality) or 'modality unknown'}): {_escape(case.question)}"]
    lines += [f"{chr(ord('A') + i)}. {_escape(option)}" for i, option in enumerate(case.options)]
    return "  \n".join(lines)


def _prediction_markdown(case: ReviewCase) -> str:
    style = {"think_before": "reasoning before the answer", "think_after": "reasoning after the answer"}
    lines = [f"**Model answer:** {_escape(_option_text(case, case.predicted_answer)) or '(none)'}"]
    if case.model_rationale:
        lines.append(
            f"**Rationale** ({style.get(case.rationale_style, 'reasoning')}): {_rationale_markdown(case)}"
        )
    else:
        lines.append("**Rationale:** (the prediction has none)")
    if len(case.model_boxes) > MAX_BOXES:
        lines.append(f"*{len(case.model_boxes)} boxes; the first {MAX_BOXES} are judged one by one.*")
    return "\n\n".join(lines)


def _reference_markdown(case: ReviewCase) -> str:
    lines = [f"**Reference answer:** {_escape(_option_text(case, case.answer)) if case.answer else '(none)'}"]
    if case.rationale:
        lines.append(f"**Reference rationale:** {_escape(BOX_PATTERN.sub('⟦box⟧', case.rationale))}")
    if case.boxes:
        lines.append(
            "**Reference boxes** (green, dashed): "
            + "; ".join(f"{_escape(b['label'])} {list(b['bbox'])}" for b in case.boxes)
        )
    return "\n\n".join(lines)


def _corrected_markdown(corrected: Sequence[dict[str, Any]], corner: Sequence[int] | None) -> str:
    lines = []
    if corner is not None:
        lines.append(f"First corner at {list(corner)}: click the opposite corner.")
    for i, box in enumerate(corrected, start=1):
        target = f"box {box['for_box']}" if box.get("for_box") else "missed finding"
        lines.append(f"fix {i}: {_escape(box['label'])} {list(box['bbox'])} (corrects {target})")
    return "  \n".join(lines) or "No corrected box."


def build_app(session: ReviewSession):
    """The Gradio Blocks app over `session` (launch it with `launch_app`, or `.launch()` for a quick look)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title="hf-meddiff review", analytics_enabled=False) as demo:
        state = gr.State({})
        gr.Markdown(
            f"## Clinician review of grounded reasoning\nModel revision `{session.model_revision}` · research use "
            "only, not for clinical decisions.\n\n" + SHORTCUTS_HELP
        )
        progress = gr.Markdown(elem_id="progress")
        with gr.Row():
            with gr.Column(scale=3):
                image = gr.Image(
                    type="pil",
                    format="png",
                    interactive=False,
                    sources=[],
                    buttons=[],
                    show_label=False,
                    elem_id="case-image",
                )
                with gr.Row():
                    target = gr.Dropdown(label="The box drawn corrects", choices=[], elem_id="box-target")
                    label = gr.Textbox(
                        label="Label of the drawn box",
                        placeholder="default: the box's label",
                        elem_id="box-label",
                    )
                corrected_md = gr.Markdown(elem_id="corrected-boxes")
                clear = gr.Button("Remove the drawn boxes", size="sm", elem_id="clear-boxes")
            with gr.Column(scale=2):
                question = gr.Markdown(elem_id="question")
                prediction = gr.Markdown(elem_id="prediction")
                show_ref = gr.Checkbox(label="Show reference (r)", value=False, elem_id="show-reference")
                reference = gr.Markdown(visible=False, elem_id="reference")
                answer = gr.Radio(list(ANSWER_VERDICTS), label="Answer (c / i / u)", elem_id="answer-verdict")
                reasoning = gr.Radio(
                    [str(i) for i in range(1, 6)],
                    label="Reasoning quality, 1 poor - 5 excellent (1-5)",
                    elem_id="reasoning-score",
                )
                box_radios = [
                    gr.Radio(
                        list(BOX_VERDICTS),
                        label=f"Box {i + 1}",
                        visible=False,
                        elem_id=f"box-verdict-{i + 1}",
                    )
                    for i in range(MAX_BOXES)
                ]
                comment = gr.Textbox(label="Comment", lines=2, elem_id="comment")
                with gr.Row():
                    prev_button = gr.Button("← Previous", elem_id="prev-case")
                    save_button = gr.Button("Save and next (Enter)", variant="primary", elem_id="save-next")
                    next_button = gr.Button("Next →", elem_id="next-case")
                status = gr.Markdown(elem_id="status")

        def picture(case: ReviewCase, st: dict):
            return render_case(
                case,
                show_reference=st.get("show_ref", False),
                corrected=st.get("corrected", []),
                corner=st.get("corner"),
            )

        def view(st: dict, message: str = ""):
            """Every output for the case at st["index"], the form filled with the reviewer's saved judgement."""
            case = session.cases[st["index"]]
            saved = session.store.latest_review(case.case_id, session.model_revision, st["reviewer"])
            st = {**st, "corner": None, "show_ref": False}
            st["corrected"] = [dict(b) for b in (saved or {}).get("corrected_boxes", [])]
            verdicts = {int(v["index"]): v["verdict"] for v in (saved or {}).get("box_verdicts", [])}
            done = len(session.store.reviewed_case_ids(session.model_revision, st["reviewer"]))
            n = len(session.cases)
            header = (
                f"**Case {st['index'] + 1} of {n}** · reviewed by {_escape(st['reviewer'])}: {done} of {n} · "
                f"case id `{case.case_id}`"
                + (" · *saved before; saving again adds a new judgement*" if saved else "")
            )
            boxes = case.model_boxes
            choices = [(f"Box {i}: {b['label']}", str(i)) for i, b in enumerate(boxes, start=1)]
            choices.append(("a missed finding (new box)", "new"))
            box_updates = [
                gr.update(
                    visible=i < len(boxes),
                    label=f"Box {i + 1}: {boxes[i]['label']} {list(boxes[i]['bbox'])}"
                    if i < len(boxes)
                    else f"Box {i + 1}",
                    value=verdicts.get(i + 1),
                )
                for i in range(MAX_BOXES)
            ]
            return (
                st,
                header,
                picture(case, st),
                _question_markdown(case),
                _prediction_markdown(case),
                gr.update(value=_reference_markdown(case), visible=False),
                False,
                (saved or {}).get("answer_verdict"),
                None if (saved or {}).get("reasoning_score") is None else str(saved["reasoning_score"]),
                *box_updates,
                gr.update(choices=choices, value=choices[0][1]),
                "",
                _corrected_markdown(st["corrected"], None),
                (saved or {}).get("comment", ""),
                message,
            )

        outputs = [
            state,
            progress,
            image,
            question,
            prediction,
            reference,
            show_ref,
            answer,
            reasoning,
            *box_radios,
            target,
            label,
            corrected_md,
            comment,
            status,
        ]

        def on_load(request: gr.Request):
            reviewer = (getattr(request, "username", None) or session.reviewer or "").strip() or "reviewer"
            start = session.first_unreviewed(reviewer)
            st = {"reviewer": reviewer, "index": 0 if start is None else start}
            message = (
                f"Every case has a judgement by {_escape(reviewer)}; you may revise any."
                if start is None
                else ("Resuming at the first case you have not reviewed." if start else "")
            )
            return view(st, message)

        def move(st: dict, step: int):
            return view({**st, "index": (st["index"] + step) % len(session.cases)})

        def on_save(st: dict, answer_value, reasoning_value, comment_value, *box_values):
            case = session.cases[st["index"]]
            if answer_value not in ANSWER_VERDICTS:
                return (
                    st,
                    *[gr.update() for _ in outputs[1:-1]],
                    "**Not saved:** choose correct / incorrect / unsure (c / i / u) first.",
                )
            verdicts = [
                {"index": i + 1, "label": b["label"], "bbox": list(b["bbox"]), "verdict": v}
                for i, (b, v) in enumerate(zip(case.model_boxes, box_values))
                if v in BOX_VERDICTS
            ]
            review_id = session.store.add_review(
                case_id=case.case_id,
                model_revision=session.model_revision,
                reviewer=st["reviewer"],
                answer_verdict=answer_value,
                reasoning_score=int(reasoning_value) if reasoning_value else None,
                box_verdicts=verdicts,
                corrected_boxes=st.get("corrected", []),
                comment=comment_value or "",
            )
            following = session.first_unreviewed(st["reviewer"], st["index"] + 1)
            message = f"Saved judgement #{review_id} of case {st['index'] + 1} (`{case.case_id}`)."
            if following is None:
                following = (st["index"] + 1) % len(session.cases)
                message += " Every case is reviewed."
            return view({**st, "index": following}, message)

        def on_click(st: dict, target_value, label_value, evt: gr.SelectData):
            case = session.cases[st["index"]]
            shown = picture(case, {**st, "corner": None})
            x, y = (float(v) for v in evt.index[:2])
            point = [
                min(max(round(x * BOX_SCALE / shown.width), 0), BOX_SCALE),
                min(max(round(y * BOX_SCALE / shown.height), 0), BOX_SCALE),
            ]
            corner = st.get("corner")
            if corner is None:
                st = {**st, "corner": point}
                return st, picture(case, st), _corrected_markdown(st.get("corrected", []), point), ""
            box = [
                min(corner[0], point[0]),
                min(corner[1], point[1]),
                max(corner[0], point[0]),
                max(corner[1], point[1]),
            ]
            st = {**st, "corner": None}
            if box[2] <= box[0] or box[3] <= box[1]:
                return (
                    st,
                    picture(case, st),
                    _corrected_markdown(st.get("corrected", []), None),
                    "The two corners must differ in x and y.",
                )
            for_box = int(target_value) if target_value and str(target_value).isdigit() else None
            default = (
                case.model_boxes[for_box - 1]["label"]
                if for_box and for_box <= len(case.model_boxes)
                else "finding"
            )
            drawn = {"label": (label_value or "").strip() or default, "bbox": box, "for_box": for_box}
            st = {**st, "corrected": [*st.get("corrected", []), drawn]}
            return st, picture(case, st), _corrected_markdown(st["corrected"], None), f"Box drawn: {box}."

        def on_clear(st: dict):
            st = {**st, "corrected": [], "corner": None}
            return st, picture(session.cases[st["index"]], st), _corrected_markdown([], None)

        def on_reference(st: dict, shown: bool):
            st = {**st, "show_ref": bool(shown)}
            return st, picture(session.cases[st["index"]], st), gr.update(visible=bool(shown))

        demo.load(on_load, None, outputs)
        prev_button.click(lambda st: move(st, -1), state, outputs)
        next_button.click(lambda st: move(st, 1), state, outputs)
        save_button.click(on_save, [state, answer, reasoning, comment, *box_radios], outputs)
        image.select(on_click, [state, target, label], [state, image, corrected_md, status])
        clear.click(on_clear, state, [state, image, corrected_md])
        show_ref.input(on_reference, [state, show_ref], [state, image, reference])
    return demo


class _RefuseUploads:
    """ASGI middleware: every upload route answers 403 (the app takes no files from the browser)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("path", "").rstrip("/").endswith("/upload"):
            from starlette.responses import PlainTextResponse

            response = PlainTextResponse("hf-meddiff review accepts no uploaded files.", status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def launch_app(
    session: ReviewSession,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: Sequence[tuple[str, str]] | None = None,
    block: bool = True,
):
    """Serve the app on `host:port`. A non-local `host` needs `auth` (user, password pairs): without it the call
    raises `PermissionError`. Uploads are refused; nothing is fetched from the network."""
    if host not in LOCAL_HOSTS and not auth:
        raise PermissionError(
            f"Refusing to serve reviews on {host} without a login: anyone who reaches {host}:{port} could read the "
            "cases and write judgements. Pass --auth USER:PASSWORD (or --auth-file FILE), or bind to 127.0.0.1."
        )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from starlette.middleware import Middleware

    demo = build_app(session)
    demo.queue(default_concurrency_limit=8)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=list(auth) if auth else None,
        auth_message="hf-meddiff review: log in with the name your judgements will carry.",
        prevent_thread_lock=not block,
        show_error=True,
        ssr_mode=False,
        max_file_size=1,
        app_kwargs={"middleware": [Middleware(_RefuseUploads)]},
        head=SHORTCUTS_JS,
        theme=theme,
        footer_links=[],
        quiet=False,
    )
