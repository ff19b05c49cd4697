# The database cannot be reached (vhost aiprov_nodb): 503 DATABASE_UNAVAILABLE
# as JSON, after the checks that need no database.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use Apache::TestRequest ();
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;

reset_db();
my $user = make_user('dbdown-user');
my $tok  = session($user);    # valid in the real database, unreachable from that vhost
my $uuid = rand_uuid();
my $body = { provider => 'openai', apiKey => 'sk-TESTSECRET-dbdown-0001' };

Apache::TestRequest::module('aiprov_nodb');

subtest 'every endpoint with a token: 503' => sub {
    for my $r ([ GET => M ], [ POST => M, json => $body ], [ GET => M . "/$uuid" ],
               [ PUT => M . "/$uuid", json => { keyLabel => 'x' } ], [ DELETE => M . "/$uuid" ]) {
        my ($method, $path, @rest) = @$r;
        my ($res) = api($method, $path, token => $tok, @rest);
        is_error($res, 503, 'DATABASE_UNAVAILABLE', "$method " . ($path eq M ? 'M' : 'M/{id}'));
    }
};

subtest 'checks that come before the database still answer' => sub {
    my ($res) = api(GET => M);
    is_error($res, 401, 'UNAUTHORIZED', 'no token: 401 (identity needs no lookup)');
    like $res->header('WWW-Authenticate') // '', qr/\ABearer\b/i, 'WWW-Authenticate: Bearer';
    ($res) = api(DELETE => M, token => $tok);
    is_error($res, 405, 'METHOD_NOT_ALLOWED', 'wrong method: 405', allow => [qw(GET POST)]);
    ($res) = api(GET => M . '/foo/bar', token => $tok);
    is_error($res, 400, 'INVALID_REQUEST', 'unknown path: 400');
    ($res) = api(GET => M . '/123', token => $tok);
    is_error($res, 400, 'INVALID_REQUEST', 'bad id: 400', field => 'id');
    ($res) = api(OPTIONS => M);
    is $res->code, 204, 'OPTIONS: 204';
    is_deeply allow_set($res), [qw(GET POST)], 'with Allow';
};

subtest 'the server still serves the database after all that' => sub {
    Apache::TestRequest::module('default');
    my ($res) = api(GET => M, token => $tok);
    is $res->code, 200, 'default vhost: 200';
    is_deeply fresh($res), { providers => [] }, 'empty list';
    is count_rows(), 0, 'nothing written through the broken vhost';
};

done_testing();
