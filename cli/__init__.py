"""The click front end: parses options, calls the library, renders result objects."""
