CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    follower_count BIGINT NOT NULL DEFAULT 0,
    following_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE follows (
    follower BIGINT NOT NULL REFERENCES users(id),
    followee BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (follower, followee)
);
CREATE INDEX follows_by_followee ON follows (followee, follower);
CREATE TABLE posts (
    id BIGSERIAL PRIMARY KEY,
    author BIGINT NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    link TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX posts_by_author ON posts (author, id DESC);
CREATE TABLE activity (
    user_id BIGINT NOT NULL,
    day BIGINT NOT NULL,
    PRIMARY KEY (day, user_id)
);
