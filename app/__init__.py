"""The desktop app: GUI, chat logic, keyword detector and command line."""
