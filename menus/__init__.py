"""The declarative menu engine and the menu definitions it loads."""
