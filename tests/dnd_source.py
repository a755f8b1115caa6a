"""A drag source for the drag-and-drop GUI test: a small window at +X+Y whose label, dragged with the
left button, offers TEXT as a text drop (TkDND). Run: python tests/dnd_source.py X Y TEXT."""
import sys
import tkinter as tk

from tkinterdnd2 import COPY, DND_TEXT, TkinterDnD


def main() -> None:
    x, y, text = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    root = tk.Tk()
    TkinterDnD.require(root)
    root.geometry(f"120x80+{x}+{y}")
    label = tk.Label(root, text="drag me", bg="yellow")
    label.pack(fill="both", expand=True)
    label.drag_source_register(1, DND_TEXT)
    label.dnd_bind("<<DragInitCmd>>", lambda event: (COPY, DND_TEXT, text))
    root.after(60_000, root.destroy)  # never outlives a stuck test
    print("ready", flush=True)
    root.mainloop()


if __name__ == "__main__":
    main()
