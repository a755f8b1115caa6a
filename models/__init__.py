"""Networks, data, training and evaluation. Never imports tkinter or app/."""
