class KnowledgeBaseError(Exception):
    """A database problem the user can't fix; shown with an error id."""


class NotFound(KnowledgeBaseError):
    pass


class Conflict(KnowledgeBaseError):
    """The write collides with existing data (a duplicate key, a broken reference)."""


class Unavailable(KnowledgeBaseError):
    """The database could not be reached or is locked for too long."""


class AlreadySuperseded(KnowledgeBaseError):
    """The decision was replaced by another supersede first."""

    def __init__(self, decision_id: int, by: int | None) -> None:
        super().__init__(f"decision #{decision_id} was already superseded by #{by}")
        self.decision_id = decision_id
        self.by = by
