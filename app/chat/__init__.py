"""The conversation without a window: detector, bot, model service, worker thread, storage (no tkinter)."""
