"""Render named prompt segments through a model's own chat template, keeping every segment's exact place.

Segments before the video become the system message, the video and the segments after it the user turn, and a final
``answer_prompt`` segment is written after the template's assistant header (the reply's first words). The template
is rendered with unique markers in place of the texts, the markers are located, and the real texts are put back; the
result must equal the template rendered with the real texts, so a template that alters the text (trims it, say) is
refused instead of silently shifting spans. Text the template adds is named ``template_0``, ``template_1`` …
"""

from __future__ import annotations

from ..errors import LayoutError
from ..inputs.prompts import CHAT_MCQA, VIDEO, PromptSegment
from .base import VideoLLMAdapter

ANSWER_PROMPT = "answer_prompt"
_MARK = "\u2063MAPFLOW{}\u2063"  # invisible separator: cannot occur in a template's own text


def _messages(system: str, user: str) -> list[dict]:
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    content = [{"type": "video"}] + ([{"type": "text", "text": user}] if user else [])
    return messages + [{"role": "user", "content": content}]


def render_chat(processor, segments: list[PromptSegment]) -> list[PromptSegment]:
    """The chat prompt as pieces: template text, the segments, and one ``video`` piece holding the placeholder."""
    names = [s.name for s in segments]
    video_at = names.index(VIDEO)
    answer = segments[-1] if segments[-1].name == ANSWER_PROMPT else None
    before = segments[:video_at]
    after = segments[video_at + 1 : len(segments) - (answer is not None)]
    if any(s.name == ANSWER_PROMPT for s in before + after):
        raise LayoutError(f"'{ANSWER_PROMPT}' must be the last segment: it is written after the assistant header")
    system, user = "".join(s.text for s in before), "".join(s.text for s in after)

    def render(system_text, user_text):
        return processor.apply_chat_template(
            _messages(system_text, user_text), tokenize=False, add_generation_prompt=True
        )

    marked = render(_MARK.format(0) if system else "", _MARK.format(1) if user else "")
    real = render(system, user)
    placeholder = processor.video_token
    if marked.count(placeholder) != 1:
        raise LayoutError(
            f"the chat template wrote the video placeholder {placeholder!r} "
            f"{marked.count(placeholder)} times; expected once"
        )
    # (character offset, marker length, kind, pieces) of everything the template did not write itself
    anchors = [(marked.index(placeholder), len(placeholder), "video", [PromptSegment(VIDEO, placeholder)])]
    for index, (kind, text, parts) in enumerate((("system", system, before), ("user", user, after))):
        if text:
            mark = _MARK.format(index)
            if marked.count(mark) != 1:
                raise LayoutError(f"the chat template dropped or repeated the {kind} text")
            anchors.append((marked.index(mark), len(mark), kind, [s for s in parts if s.text]))
    anchors.sort(key=lambda a: a[0])
    order = [kind for _, _, kind, _ in anchors]
    if order != [k for k in ("system", "video", "user") if k in order]:
        raise LayoutError(
            f"the chat template wrote the prompt parts in the order {order}; the segments need "
            "system text, then the video, then the user text"
        )

    pieces: list[PromptSegment] = []
    cursor = 0

    def template_piece(text):
        return PromptSegment(f"template_{sum(p.name.startswith('template_') for p in pieces)}", text)

    for at, length, _, parts in anchors:
        if at > cursor:
            pieces.append(template_piece(marked[cursor:at]))
        pieces.extend(parts)
        cursor = at + length
    if cursor < len(marked):
        pieces.append(template_piece(marked[cursor:]))
    if "".join(p.text for p in pieces) != real:
        raise LayoutError(
            "the chat template changes the prompt text (e.g. trims it), so segment positions cannot be "
            "kept; give segments the template leaves unchanged"
        )
    # empty segments keep their names (an empty span), so flows over them are still defined
    pieces.extend(s for s in before + after if not s.text)
    if answer is not None:
        pieces.append(answer)
    return pieces


class ChatVideoLLMAdapter(VideoLLMAdapter):
    """A family whose prompt is a chat: segments are rendered by `render_chat` through the processor's template.

    The ``video`` segment's own text is only a marker: the template writes the processor's video placeholder.
    """

    default_prompt_template = CHAT_MCQA

    @property
    def language_model(self):
        return self.model.model.language_model

    def render_prompt(self, segments: list[PromptSegment]) -> list[PromptSegment]:
        return render_chat(self.processor, segments)

    def default_frame_size(self) -> int:
        vision = self.hf_model.config.vision_config
        if getattr(vision, "image_size", None) is not None:
            return super().default_frame_size()
        patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
        return 4 * patch  # 2x2 merged tokens for the patch-merging (Qwen-style) towers
