"""The resources both JavaScript scenarios are about: Express handlers serve them, React
components render them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    text: str  # a string field: required on create, searched
    group: str  # a string field shared by some rows: filtered on, grouped by
    number: str  # a numeric field: sorted on, summarized
    rows: tuple[tuple[str, str, float], ...]

    def records(self) -> list[dict[str, Any]]:
        return [
            {"id": i, self.text: t, self.group: g, self.number: n}
            for i, (t, g, n) in enumerate(self.rows, start=1)
        ]

    def names(self) -> dict[str, str]:
        return {
            "plural": self.plural,
            "Plural": self.plural[0].upper() + self.plural[1:],
            "singular": self.singular,
            "Singular": self.singular[0].upper() + self.singular[1:],
            "text": self.text,
            "Text": self.text.capitalize(),
            "group": self.group,
            "Group": self.group.capitalize(),
            "number": self.number,
            "Number": self.number.capitalize(),
        }


# Rows 1 and 3 share a group; numbers are distinct, so every sort has one right answer.
RESOURCES: tuple[Resource, ...] = (
    Resource(
        "books",
        "book",
        "title",
        "genre",
        "year",
        (
            ("Dune", "scifi", 1965),
            ("Emma", "romance", 1815),
            ("Neuromancer", "scifi", 1984),
            ("Rebecca", "gothic", 1938),
        ),
    ),
    Resource(
        "users",
        "user",
        "name",
        "role",
        "age",
        (
            ("Alice", "admin", 34),
            ("Bob", "editor", 27),
            ("Carol", "admin", 45),
            ("Dave", "viewer", 19),
        ),
    ),
    Resource(
        "products",
        "product",
        "name",
        "category",
        "price",
        (
            ("Kettle", "kitchen", 29.5),
            ("Lamp", "office", 18.25),
            ("Toaster", "kitchen", 42),
            ("Stapler", "desk", 7.99),
        ),
    ),
    Resource(
        "tasks",
        "task",
        "title",
        "status",
        "priority",
        (
            ("Write report", "open", 2),
            ("Fix login", "done", 1),
            ("Plan sprint", "open", 3),
            ("Update docs", "blocked", 5),
        ),
    ),
    Resource(
        "movies",
        "movie",
        "title",
        "genre",
        "minutes",
        (
            ("Alien", "horror", 117),
            ("Amelie", "comedy", 122),
            ("The Thing", "horror", 109),
            ("Heat", "crime", 170),
        ),
    ),
    Resource(
        "songs",
        "song",
        "title",
        "artist",
        "seconds",
        (
            ("Hey Jude", "Beatles", 431),
            ("Imagine", "Lennon", 183),
            ("Let It Be", "Beatles", 243),
            ("Wonderwall", "Oasis", 258),
        ),
    ),
    Resource(
        "events",
        "event",
        "name",
        "city",
        "seats",
        (
            ("Jazz Night", "Oslo", 120),
            ("Code Camp", "Lisbon", 80),
            ("Book Fair", "Oslo", 300),
            ("Film Club", "Ghent", 45),
        ),
    ),
    Resource(
        "recipes",
        "recipe",
        "name",
        "cuisine",
        "minutes",
        (
            ("Paella", "spanish", 60),
            ("Ramen", "japanese", 45),
            ("Tortilla", "spanish", 30),
            ("Risotto", "italian", 35),
        ),
    ),
    Resource(
        "cars",
        "car",
        "model",
        "make",
        "year",
        (
            ("Corolla", "Toyota", 2019),
            ("Civic", "Honda", 2021),
            ("Yaris", "Toyota", 2017),
            ("Golf", "Volkswagen", 2020),
        ),
    ),
    Resource(
        "courses",
        "course",
        "title",
        "level",
        "credits",
        (
            ("Algebra", "beginner", 3),
            ("Topology", "advanced", 6),
            ("Statistics", "beginner", 4),
            ("Compilers", "advanced", 5),
        ),
    ),
)
