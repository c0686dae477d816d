"""A streaming turn grows on screen without re-laying out the whole screen for every token
(issue 13: keys must stay quick while a model streams)."""

from __future__ import annotations

from textual.app import App, ComposeResult

from tui.widgets.transcript import Transcript

WORDS = "we could split the cost of the repairs if you tell me what the garage quoted you".split()


class TranscriptApp(App):
    def compose(self) -> ComposeResult:
        yield Transcript(("Ana", "Bo"), id="transcript")


async def test_a_streaming_turn_lays_out_only_when_it_wraps_to_a_new_line():
    app = TranscriptApp()
    async with app.run_test(size=(60, 20)) as pilot:
        transcript = app.query_one(Transcript)
        view = transcript.start_turn(0, 0, by_human=False)
        await pilot.pause()
        layouts = []
        heights = []
        text = ""
        for word in WORDS:
            text = f"{text} {word}".strip()
            before = view._layout_updates
            transcript.stream(0, text)
            layouts.append(view._layout_updates > before)
            await pilot.pause()
            heights.append(view.size.height)
            assert text in " ".join(line.strip() for line in transcript.last_text().splitlines())
        grew = [later > earlier for earlier, later in zip(heights, heights[1:], strict=False)]
        assert heights[-1] > heights[0]  # the text wrapped onto more lines, and the view grew
        assert grew == layouts[1:]  # a layout exactly when the height changed, never otherwise
        assert 0 < sum(layouts) < len(WORDS) // 2
        on_screen = " ".join(line.strip() for line in _screen_lines(app, view))
        assert text in on_screen  # every word streamed is painted, the last one included


def _screen_lines(app: App, view) -> list[str]:
    """The view's rows as the screen shows them (the last streamed words included)."""
    region = view.content_region
    strips = app.screen._compositor.render_strips()
    return [strips[y].text[region.x : region.right] for y in range(region.y, region.bottom)]


async def test_the_takeover_panel_border_says_whose_turn_it_is():
    from tui.widgets.takeover import TakeoverPanel

    class PanelApp(App):
        CSS_PATH = "../tui/app.tcss"

        def compose(self) -> ComposeResult:
            yield TakeoverPanel(id="takeover")

    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(TakeoverPanel)
        for your_turn, border in ((True, "heavy"), (False, "round"), (True, "heavy")):
            panel.set_turn(your_turn, "")
            await pilot.pause()
            assert panel.styles.border_top[0] == border
            assert app.screen._compositor.render_strips()[0].text.startswith("┏" if border == "heavy" else "╭")
