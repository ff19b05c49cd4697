# First sign of life: the handler is mounted, refuses strangers, lists nothing.
use strict;
use warnings FATAL => 'all';
use Apache::Test qw(-withtestmore);
use lib 't/lib';
use AiprovTest;

plan tests => 7, need_module 'dbd', 'aiprov';

reset_db();
my $user = make_user('smoke-user');

my ($res, $data) = api(GET => '/api/ai-providers');
is $res->code, 401, 'no token: 401';
like $res->header('WWW-Authenticate') // '', qr/^Bearer\b/i, 'WWW-Authenticate: Bearer';
is ref $data && $data->{error}, 'UNAUTHORIZED', 'error code UNAUTHORIZED';

my $token = make_session($user);
($res, $data) = api(GET => '/api/ai-providers', token => $token);
is $res->code, 200, 'with a session: 200' or diag $res->as_string;
like $res->header('Content-Type') // '', qr{^application/json}i, 'JSON content type';
is_deeply $data, { providers => [] }, 'no providers yet';

($res) = api(GET => '/api/ai-providers', token => make_session($user, expires_in => -60));
is $res->code, 401, 'expired session: 401';
