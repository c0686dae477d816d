"""No screen region is left showing what was there before (issue 13, defect 1).

Textual paints a screen's changed regions and then writes the paint to the terminal, unless an
update batch is open (a widget recomposing, such as the footer when the keys change; a content
switcher changing tabs; screens popping): then the paint is thrown away, though the regions it
covered have already been taken off the compositor's list of regions to paint. Those regions keep
their old text on the terminal (the previous screen's text, a footer half old and half new)
until something repaints them, which a resize does. The app notes every paint thrown away so and
repaints the whole screen once the batch closes.
"""

from __future__ import annotations

from rich.console import RenderableType
from textual.app import App, ScreenStackError
from textual.screen import Screen


class RepaintingApp(App):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._paint_thrown_away = False

    def _display(self, screen: Screen, renderable: RenderableType | None) -> None:
        if renderable is not None and self._batch_count:
            self._paint_thrown_away = True
        super()._display(screen, renderable)

    def _end_batch(self) -> None:
        super()._end_batch()
        if self._paint_thrown_away and not self._batch_count:
            self._paint_thrown_away = False
            try:
                self.screen.refresh()
            except ScreenStackError:  # closing: nothing left to paint
                pass
