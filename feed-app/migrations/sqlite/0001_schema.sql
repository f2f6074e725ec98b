CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    follower_count INTEGER NOT NULL DEFAULT 0,
    following_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE follows (
    follower INTEGER NOT NULL REFERENCES users(id),
    followee INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (follower, followee)
);
CREATE INDEX follows_by_followee ON follows (followee, follower);
CREATE TABLE posts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    author INTEGER NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    link TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX posts_by_author ON posts (author, id DESC);
CREATE TABLE activity (
    user_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    PRIMARY KEY (day, user_id)
);
