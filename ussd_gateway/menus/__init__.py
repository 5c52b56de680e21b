"""The declarative menu engine: the menu model, its compiler (TOML definitions to
one `transitions` machine per menu), the engine that walks it, screen text and paging,
the checks of `menus check` and the menu map."""
