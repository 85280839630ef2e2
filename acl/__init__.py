"""ACL model, source adapters (POSIX) and principal resolution."""
from .model import ACL, EVERYONE, Principal, group_token, user_token  # noqa: F401
