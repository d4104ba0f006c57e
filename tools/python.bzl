"""requirement(): the label of a locked third-party Python distribution."""

def requirement(name):
    """Returns @pyenv//:<normalized name>; a name missing from the lock fails the build."""
    return "@pyenv//:" + name.lower().replace("-", "_").replace(".", "_")
